#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) without libsystemd: one datagram per state change to
/// $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@').
/// Without the variable (not started by systemd) every call does nothing.
struct SystemdNotify {
    private let path: [UInt8]?

    init(environment value: String? = getenv("NOTIFY_SOCKET").map { String(cString: $0) }) {
        guard let value, !value.isEmpty, value.utf8.count < 108,
              value.hasPrefix("/") || value.hasPrefix("@") else {
            path = nil
            return
        }
        var bytes = Array(value.utf8)
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }   // abstract namespace
        path = bytes
    }

    var enabled: Bool { path != nil }

    /// `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=…`; lines joined by "\n".
    @discardableResult
    func send(_ lines: String...) -> Bool {
        guard let path else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.enumerated() { raw[i] = b }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        var message = lines.joined(separator: "\n")
        return message.withUTF8 { buf in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, buf.baseAddress, buf.count, Int32(MSG_NOSIGNAL), $0, length) == buf.count
                }
            }
        }
    }

    /// For RELOADING=1 (systemd 253+ wants MONOTONIC_USEC next to it).
    static func monotonicMicroseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }
}
