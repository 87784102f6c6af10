#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import GatehouseLog

/// The PROXY protocol header an L4 balancer puts before the client's bytes
/// (haproxy.org/download/2.6/doc/proxy-protocol.txt, versions 1 and 2). Pure:
/// it only looks at the bytes it is given.
enum ProxyProtocolHeader: Equatable {
    /// Not enough bytes yet; at least this many are needed to decide.
    case incomplete(atLeast: Int)
    case invalid(String)
    /// `length` bytes belong to the header; `source` is the client's address
    /// as text, nil for LOCAL/UNKNOWN (health checks: use the peer address).
    case complete(length: Int, source: [UInt8]?)

    /// v1 lines are at most 107 bytes; v2 headers are 16 bytes plus their own
    /// length, which we bound (addresses plus a few TLVs).
    static let v1MaxLength = 107
    static let v2MaxLength = 16 + 1024
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    private static let v1Prefix = Array("PROXY ".utf8)

    static func parse(_ bytes: UnsafeRawBufferPointer) -> ProxyProtocolHeader {
        guard let first = bytes.first else { return .incomplete(atLeast: 1) }
        if first == v2Signature[0] {
            return parseV2(bytes)
        } else if first == v1Prefix[0] {
            return parseV1(bytes)
        }
        return .invalid("no PROXY protocol header")
    }

    // MARK: - Version 2 (binary)

    private static func parseV2(_ b: UnsafeRawBufferPointer) -> ProxyProtocolHeader {
        let prefix = min(b.count, v2Signature.count)
        guard b.prefix(prefix).elementsEqual(v2Signature.prefix(prefix)) else { return .invalid("bad v2 signature") }
        guard b.count >= 16 else { return .incomplete(atLeast: 16) }
        let versionCommand = b[12], family = b[13]
        let length = Int(b[14]) << 8 | Int(b[15])
        guard versionCommand >> 4 == 2 else { return .invalid("unsupported version \(versionCommand >> 4)") }
        guard 16 + length <= v2MaxLength else { return .invalid("v2 header too long (\(length))") }
        guard b.count >= 16 + length else { return .incomplete(atLeast: 16 + length) }
        switch versionCommand & 0x0F {
        case 0x0:
            // LOCAL: the balancer's own connection (health check).
            return .complete(length: 16 + length, source: nil)
        case 0x1:
            break
        default:
            return .invalid("unknown v2 command")
        }
        let body = UnsafeRawBufferPointer(rebasing: b[16 ..< 16 + length])
        switch family {
        case 0x11, 0x12:   // TCP4, UDP4: 4+4 address bytes, 2+2 ports
            guard length >= 12 else { return .invalid("v2 IPv4 block too short") }
            return .complete(length: 16 + length, source: text(AF_INET, UnsafeRawBufferPointer(rebasing: body[0 ..< 4])))
        case 0x21, 0x22:   // TCP6, UDP6: 16+16 address bytes, 2+2 ports
            guard length >= 36 else { return .invalid("v2 IPv6 block too short") }
            return .complete(length: 16 + length, source: text(AF_INET6, UnsafeRawBufferPointer(rebasing: body[0 ..< 16])))
        case 0x00:
            return .complete(length: 16 + length, source: nil)
        default:
            return .invalid("unsupported v2 address family \(family)")
        }
    }

    // MARK: - Version 1 (text)

    private static func parseV1(_ b: UnsafeRawBufferPointer) -> ProxyProtocolHeader {
        let prefix = min(b.count, v1Prefix.count)
        guard b.prefix(prefix).elementsEqual(v1Prefix.prefix(prefix)) else { return .invalid("bad v1 prefix") }
        guard let lf = b.firstIndex(of: 0x0A) else {
            return b.count >= v1MaxLength ? .invalid("v1 line too long") : .incomplete(atLeast: b.count + 1)
        }
        let end = lf + 1
        guard end <= v1MaxLength, lf > 0, b[lf - 1] == 0x0D else { return .invalid("v1 line not ended by CRLF") }
        let fields = b[v1Prefix.count ..< lf - 1].split(separator: 0x20, omittingEmptySubsequences: false).map(Array.init)
        guard let proto = fields.first else { return .invalid("empty v1 line") }
        if proto == Array("UNKNOWN".utf8) { return .complete(length: end, source: nil) }
        let family: Int32
        switch proto {
        case Array("TCP4".utf8): family = AF_INET
        case Array("TCP6".utf8): family = AF_INET6
        default: return .invalid("unknown v1 protocol")
        }
        guard fields.count == 5 else { return .invalid("v1 needs 4 fields after the protocol") }
        guard let source = canonical(family, fields[1]), canonical(family, fields[2]) != nil,
              isPort(fields[3]), isPort(fields[4]) else { return .invalid("bad v1 address or port") }
        return .complete(length: end, source: source)
    }

    private static func isPort(_ digits: [UInt8]) -> Bool {
        guard (1 ... 5).contains(digits.count), digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return false }
        if digits.count > 1 && digits[0] == 0x30 { return false }
        return digits.reduce(0) { $0 * 10 + Int($1 - 0x30) } <= 65535
    }

    /// Address text validated by inet_pton and re-rendered by inet_ntop.
    private static func canonical(_ family: Int32, _ text: [UInt8]) -> [UInt8]? {
        guard text.count < 64 else { return nil }
        var raw = [UInt8](repeating: 0, count: 16)
        let ok = (text + [0]).withUnsafeBufferPointer { t in
            t.withMemoryRebound(to: CChar.self) { inet_pton(family, $0.baseAddress, &raw) }
        }
        guard ok == 1 else { return nil }
        return raw.withUnsafeBytes { Self.text(family, UnsafeRawBufferPointer(rebasing: $0.prefix(family == AF_INET ? 4 : 16))) }
    }

    private static func text(_ family: Int32, _ address: UnsafeRawBufferPointer) -> [UInt8] {
        var out = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        _ = inet_ntop(family, address.baseAddress, &out, socklen_t(out.count))
        return out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    }
}

/// Reads a PROXY protocol header off a freshly accepted socket before any
/// TLS or HTTP byte is touched. Bytes are peeked and only the header's own
/// bytes are consumed, so the TLS ClientHello that follows stays in the
/// socket for OpenSSL.
final class ProxyHeaderReader {
    unowned let worker: Worker
    let fd: Int32
    let listener: Listener
    let peer: [UInt8]
    private var header: [UInt8] = []
    private var event: OpaquePointer?

    init(worker: Worker, fd: Int32, listener: Listener, peer: [UInt8]) {
        self.worker = worker
        self.fd = fd
        self.listener = listener
        self.peer = peer
    }

    func start(timeout seconds: Double) {
        event = event_new(worker.base, fd, Int16(EV_READ | EV_PERSIST), Callbacks.proxyHeader,
                          Unmanaged.passUnretained(self).toOpaque())
        var tv = timeval(seconds: seconds)
        event_add(event, &tv)
    }

    /// Readable or timed out.
    func fired(timedOut: Bool) {
        guard !timedOut else { return finish(nil, reason: "timeout") }
        let room = ProxyProtocolHeader.v2MaxLength - header.count
        var peeked = [UInt8](repeating: 0, count: room)
        let n = recv(fd, &peeked, room, Int32(MSG_PEEK))
        if n == 0 { return finish(nil, reason: "closed") }
        if n < 0 {
            if errno == EAGAIN || errno == EINTR { return }
            return finish(nil, reason: String(cString: strerror(errno)))
        }
        let combined = header + peeked[0 ..< n]
        let result = combined.withUnsafeBytes { ProxyProtocolHeader.parse($0) }
        switch result {
        case .invalid(let why):
            finish(nil, reason: why)
        case .incomplete(let atLeast):
            // Everything up to `atLeast` is header: take it off the socket so a
            // level-triggered read does not spin on bytes we already saw.
            let take = min(n, atLeast - header.count)
            guard consume(take) else { return finish(nil, reason: "read failed") }
            header += peeked[0 ..< take]
        case .complete(let length, let source):
            guard consume(length - header.count) else { return finish(nil, reason: "read failed") }
            finish(source ?? peer, reason: nil)
        }
    }

    private func consume(_ count: Int) -> Bool {
        guard count > 0 else { return true }
        var sink = [UInt8](repeating: 0, count: count)
        return recv(fd, &sink, count, 0) == count
    }

    private func finish(_ client: [UInt8]?, reason: String?) {
        if let event { event_free(event) }
        event = nil
        if let client {
            worker.proxyHeaderDone(self, fd: fd, client: client)
        } else {
            if Log.enabled(.debug) {
                Log.debug("PROXY header from \(String(decoding: peer, as: UTF8.self)) refused: \(reason ?? "?")")
            }
            Glibc.close(fd)
            worker.proxyHeaderDone(self, fd: -1, client: nil)
        }
    }
}
