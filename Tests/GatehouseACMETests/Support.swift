import Foundation
import Testing
@testable import GatehouseACME

/// Runs `openssl` with `arguments` (and `input` on stdin); the checks in
/// these tests are OpenSSL's CLI, not the code under test.
@discardableResult
func openssl(_ arguments: [String], input: [UInt8] = [], expectSuccess: Bool = true) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    process.arguments = arguments
    let stdin = Pipe(), stdout = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stdout
    try process.run()
    stdin.fileHandleForWriting.write(Data(input))
    try stdin.fileHandleForWriting.close()
    let data = stdout.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let output = String(decoding: data, as: UTF8.self)
    if expectSuccess && process.terminationStatus != 0 {
        Issue.record("openssl \(arguments.joined(separator: " ")) failed: \(output)")
    }
    return (process.terminationStatus, output)
}

/// A temporary directory removed by `remove()`.
struct Scratch {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "gatehouse-acme-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    }

    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let file = path + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// DER ECDSA-Sig-Value (RFC 3279 §2.2.3) from R || S, written here
/// independently of the module's DER → raw conversion.
func derSignature(raw: [UInt8]) -> [UInt8] {
    func integer(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var v = Array(bytes.drop { $0 == 0 })
        if v.isEmpty { v = [0] }
        if v[0] & 0x80 != 0 { v.insert(0, at: 0) }
        return [0x02, UInt8(v.count)] + v
    }
    let body = integer(raw[0 ..< 32]) + integer(raw[32 ..< 64])
    return [0x30, UInt8(body.count)] + body
}

/// A PEM from DER and its label.
func pem(_ label: String, _ der: [UInt8]) -> [UInt8] {
    let b64 = Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
    return Array("-----BEGIN \(label)-----\n\(b64)\n-----END \(label)-----\n".utf8)
}

/// RFC 7515 Appendix A.3's P-256 key (d, x, y) as PKCS#8: the fixed DER
/// framing of an unencrypted prime256v1 PrivateKeyInfo (RFC 5208, RFC 5915).
enum RFC7515A3 {
    static let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
    static let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
    static let d = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"
    /// The example's JWS Signing Input and its ES256 signature.
    static let signingInput = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    static let signature = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"

    static var pkcs8: [UInt8] {
        let prefix: [UInt8] = [0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                               0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02, 0x01, 0x01,
                               0x04, 0x20]
        let pub: [UInt8] = [0xa1, 0x44, 0x03, 0x42, 0x00, 0x04]
        return prefix + Base64URL.decode(d)! + pub + Base64URL.decode(x)! + Base64URL.decode(y)!
    }

    static var pem: [UInt8] { GatehouseACMETests.pem("PRIVATE KEY", pkcs8) }
}

/// The public key PEM of a private key PEM, by OpenSSL's CLI.
func publicKeyPEM(_ scratch: Scratch, privateKey: [UInt8]) throws -> String {
    let file = try scratch.write("key-\(UUID().uuidString).pem", privateKey)
    let out = scratch.path + "/pub-\(UUID().uuidString).pem"
    try openssl(["pkey", "-in", file, "-pubout", "-out", out])
    return out
}

/// Whether OpenSSL's CLI accepts `rawSignature` (R || S) over `message` by `publicKey`.
func opensslVerifiesES256(_ scratch: Scratch, publicKey: String, message: [UInt8], rawSignature: [UInt8]) throws -> Bool {
    let data = try scratch.write("msg-\(UUID().uuidString)", message)
    let sig = try scratch.write("sig-\(UUID().uuidString).der", derSignature(raw: rawSignature))
    let r = try openssl(["dgst", "-sha256", "-verify", publicKey, "-signature", sig, data], expectSuccess: false)
    return r.status == 0 && r.output.contains("Verified OK")
}
