#if canImport(Glibc)
import Glibc
#endif
import COpenSSL

/// Why an ACME building block failed: a message for the log, OpenSSL's
/// reason appended where it had one.
public struct ACMEError: Error, Sendable, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }

    /// `what` plus the first queued OpenSSL error (the queue is cleared).
    static func openssl(_ what: String) -> ACMEError {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return ACMEError(what) }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        return ACMEError("\(what): \(OpenSSL.string(buf))")
    }
}

enum OpenSSL {
    /// A NUL-terminated C buffer as text.
    static func string(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// SHA-256 (FIPS 180-4) of `bytes`.
    static func sha256<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        let input = Array(bytes)
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let ok = input.withUnsafeBytes { EVP_Digest($0.baseAddress, $0.count, &out, &length, EVP_sha256(), nil) }
        precondition(ok == 1 && length == 32, "SHA-256 failed")
        return out
    }

    static func randomBytes(_ count: Int) throws(ACMEError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        guard RAND_bytes(&out, Int32(count)) == 1 else { throw .openssl("no random bytes") }
        return out
    }

    /// Runs `body` with a fresh memory BIO and returns what it wrote.
    static func writingToMemory(_ what: String, _ body: (OpaquePointer) -> Bool) throws(ACMEError) -> [UInt8] {
        guard let bio = BIO_new(BIO_s_mem()) else { throw .openssl("\(what): no memory BIO") }
        defer { BIO_free(bio) }
        guard body(bio) else { throw .openssl(what) }
        let pending = Int(BIO_ctrl_pending(bio))
        var out = [UInt8](repeating: 0, count: pending)
        guard pending == 0 || BIO_read(bio, &out, Int32(pending)) == Int32(pending) else { throw .openssl("\(what): short read") }
        return out
    }

    /// Runs `body` with a read-only memory BIO over `bytes`.
    static func readingFromMemory<T>(_ bytes: [UInt8], _ body: (OpaquePointer) -> T) -> T {
        bytes.withUnsafeBytes { raw in
            let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count))!
            defer { BIO_free(bio) }
            return body(bio)
        }
    }

    /// DER of an object through a two-call i2d function.
    static func der(_ what: String, _ encode: (UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?) -> Int32) throws(ACMEError) -> [UInt8] {
        let length = encode(nil)
        guard length > 0 else { throw .openssl(what) }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { buf -> Int32 in
            var p = buf.baseAddress
            return encode(&p)
        }
        guard written == length else { throw .openssl(what) }
        return out
    }

    /// `value` as exactly `count` big-endian bytes (left-padded with zeros).
    static func bytes(_ bn: OpaquePointer, count: Int) throws(ACMEError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        guard BN_bn2binpad(bn, &out, Int32(count)) == Int32(count) else { throw ACMEError("number longer than \(count) bytes") }
        return out
    }

    /// `value` in the fewest big-endian bytes (RFC 7518 §6.3.1: RSA n and e).
    static func minimalBytes(_ bn: OpaquePointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: max(1, (Int(BN_num_bits(bn)) + 7) / 8))
        let n = BN_bn2bin(bn, &out)
        return Array(out.prefix(Int(max(n, 1))))
    }
}
