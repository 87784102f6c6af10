#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import GatehouseConfig
import Synchronization

/// One session ticket key (RFC 5077 §4 layout, as nginx's 80-byte files): a
/// 16-byte name that tickets carry in clear, a 32-byte HMAC key, a 32-byte AES key.
struct TicketKey: Equatable {
    static let fileSize = 80
    var name: [UInt8]
    var hmacKey: [UInt8]
    var aesKey: [UInt8]

    init(bytes: ArraySlice<UInt8>) {
        precondition(bytes.count == Self.fileSize)
        let start = bytes.startIndex
        name = Array(bytes[start ..< start + 16])
        hmacKey = Array(bytes[start + 16 ..< start + 48])
        aesKey = Array(bytes[start + 48 ..< start + 80])
    }

    static func random() -> TicketKey? {
        var bytes = [UInt8](repeating: 0, count: fileSize)
        guard RAND_bytes(&bytes, Int32(fileSize)) == 1 else { return nil }
        return TicketKey(bytes: bytes[...])
    }
}

public struct TicketKeyError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// The keys that encrypt and decrypt stateless session tickets, shared by
/// every worker and kept across reloads (a reload must not log visitors out of
/// resumption).
///
/// Without a key file the keys are random, made here, and rotated every
/// `rotationInterval`: the newest encrypts, the previous one still decrypts
/// (and its tickets are renewed), so a ticket lives at most two intervals. With
/// `[tls] ticket_key_file` the file's keys are used as they are, so every
/// instance of a fleet resumes the others' sessions; rotating them is the
/// fleet's job (write a new first key, keep the old ones, reload).
public final class TicketKeys: Sendable {
    public static let rotationInterval: Int = 12 * 3600

    struct Ring {
        /// keys[0] encrypts; all decrypt.
        var keys: [TicketKey]
        /// Monotonic seconds of the next rotation; nil for a fixed file.
        var rotateAt: Int?
    }

    private let ring: Mutex<Ring>
    public let source: String

    /// Random keys, rotated in process.
    public init() throws(TicketKeyError) {
        guard let key = TicketKey.random() else { throw TicketKeyError(description: "RAND_bytes failed") }
        ring = Mutex(Ring(keys: [key], rotateAt: Self.now() + Self.rotationInterval))
        source = "random, rotated every \(Self.rotationInterval / 3600) h"
    }

    /// Keys from a file of one or more 80-byte keys (`openssl rand 80 > file`).
    public init(file: String) throws(TicketKeyError) {
        let bytes = try Self.read(file)
        guard !bytes.isEmpty, bytes.count % TicketKey.fileSize == 0 else {
            throw TicketKeyError(description: "\(file): ticket_key_file: must hold one or more 80-byte keys, has \(bytes.count) bytes")
        }
        var keys: [TicketKey] = []
        for offset in stride(from: 0, to: bytes.count, by: TicketKey.fileSize) {
            keys.append(TicketKey(bytes: bytes[offset ..< offset + TicketKey.fileSize]))
        }
        ring = Mutex(Ring(keys: keys, rotateAt: nil))
        source = "\(keys.count) key(s) from \(file)"
    }

    /// The keys `[tls]` asks for.
    public static func load(_ settings: TLSSettings) throws(TicketKeyError) -> TicketKeys {
        if let file = settings.ticketKeyFile { return try TicketKeys(file: file) }
        return try TicketKeys()
    }

    /// The key to encrypt a new ticket with.
    func encryptionKey(now: Int = TicketKeys.now()) -> TicketKey? {
        ring.withLock { ring in
            Self.rotateIfDue(&ring, now: now)
            return ring.keys.first
        }
    }

    enum Lookup: Equatable { case current(TicketKey), old(TicketKey), unknown }

    /// The key a presented ticket names. Old keys decrypt, and the caller asks
    /// OpenSSL to issue a fresh ticket under the current one.
    func decryptionKey(named name: UnsafeRawBufferPointer, now: Int = TicketKeys.now()) -> Lookup {
        ring.withLock { ring in
            Self.rotateIfDue(&ring, now: now)
            for (i, key) in ring.keys.enumerated() where key.name.elementsEqual(name) {
                return i == 0 ? .current(key) : .old(key)
            }
            return .unknown
        }
    }

    /// Rotation happens on use, so no timer is needed. A key that was replaced
    /// more than one interval ago is dropped entirely.
    private static func rotateIfDue(_ ring: inout Ring, now: Int) {
        guard let due = ring.rotateAt, now >= due, let fresh = TicketKey.random() else { return }
        ring.keys = now >= due + rotationInterval ? [fresh] : [fresh, ring.keys[0]]
        ring.rotateAt = now + rotationInterval
    }

    static func now() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int(ts.tv_sec)
    }

    private static func read(_ path: String) throws(TicketKeyError) -> [UInt8] {
        guard let file = fopen(path, "rb") else {
            throw TicketKeyError(description: "\(path): ticket_key_file: cannot read: \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, file)
            if n <= 0 { break }
            bytes += buffer[0 ..< n]
            if bytes.count > 1 << 20 { break }   // no sane key file is this big
        }
        return bytes
    }
}
