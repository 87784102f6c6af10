#if canImport(Glibc)
import Glibc
#endif
import CLibevent

/// A resolved socket address (IPv4, IPv6 or unix), stored by value.
public struct SocketAddress: Sendable, CustomStringConvertible {
    private var storage = sockaddr_storage()
    public private(set) var length: socklen_t = 0
    public let description: String

    public var family: Int32 { Int32(storage.ss_family) }

    /// Numeric or resolvable host; resolution happens at load time, off the event loop.
    public init?(host: String, port: UInt16) {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        description = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        withUnsafeMutableBytes(of: &storage) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(first.pointee.ai_addrlen)))
        }
        length = first.pointee.ai_addrlen
    }

    public init?(unixPath: String) {
        var addr = sockaddr_un()
        let maxLength = MemoryLayout.size(ofValue: addr.sun_path)
        let bytes = Array(unixPath.utf8)
        guard !bytes.isEmpty, bytes.count < maxLength else { return nil }
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        description = "unix:\(unixPath)"
        withUnsafeMutableBytes(of: &storage) { dst in
            withUnsafeBytes(of: addr) { dst.copyMemory(from: $0) }
        }
        length = socklen_t(MemoryLayout<sockaddr_un>.size)
    }

    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    /// The numeric host of a peer, as bytes for X-Forwarded-For.
    static func numericHost(_ address: UnsafePointer<sockaddr>) -> [UInt8] {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                var a = sin.pointee.sin_addr
                _ = inet_ntop(AF_INET, &a, &text, socklen_t(text.count))
            }
        case AF_INET6:
            address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                var a = sin6.pointee.sin6_addr
                _ = inet_ntop(AF_INET6, &a, &text, socklen_t(text.count))
            }
        default:
            return Array("unix".utf8)
        }
        return text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    }
}

/// What `max_connections_per_client` counts by, from a numeric address as
/// text: an IPv4 address as is; an IPv6 address by its /64, the block one
/// subscriber usually holds (RFC 6177), or one host could use 2^64 addresses
/// to stay under any cap. IPv4-mapped addresses count as the IPv4 address.
enum ClientKey {
    static func of(_ address: [UInt8]) -> [UInt8] {
        guard address.contains(UInt8(ascii: ":")) else { return address }
        var parsed = in6_addr()
        let ok = (address + [0]).withUnsafeBufferPointer { text in
            text.withMemoryRebound(to: CChar.self) { inet_pton(AF_INET6, $0.baseAddress, &parsed) }
        }
        guard ok == 1 else { return address }
        let bytes = withUnsafeBytes(of: parsed) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            return Array("\(bytes[12]).\(bytes[13]).\(bytes[14]).\(bytes[15])".utf8)
        }
        return Array("v6/64:".utf8) + bytes[0..<8]
    }
}
