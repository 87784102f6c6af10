#if canImport(Glibc)
import Glibc
#endif

/// Operational log: one line per message on stderr, with a syslog `<N>` prefix so
/// the journal keeps the level (sd-daemon(3) convention).
public enum LogLevel: Int32, Sendable, Comparable {
    case error = 3
    case warning = 4
    case notice = 5
    case info = 6
    case debug = 7

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rawValue > rhs.rawValue }

    var label: String {
        switch self {
        case .error: "error"
        case .warning: "warning"
        case .notice: "notice"
        case .info: "info"
        case .debug: "debug"
        }
    }
}

public enum Log {
    /// Read from the environment once; no mutable global state.
    public static let threshold: LogLevel = {
        guard let raw = getenv("GATEHOUSE_LOG_LEVEL") else { return .info }
        switch String(cString: raw) {
        case "debug": return .debug
        case "notice": return .notice
        case "warning": return .warning
        case "error": return .error
        default: return .info
        }
    }()

    @inline(__always)
    public static func enabled(_ level: LogLevel) -> Bool { level >= threshold }

    public static func error(_ message: @autoclosure () -> String) { write(.error, message) }
    public static func warning(_ message: @autoclosure () -> String) { write(.warning, message) }
    public static func notice(_ message: @autoclosure () -> String) { write(.notice, message) }
    public static func info(_ message: @autoclosure () -> String) { write(.info, message) }
    public static func debug(_ message: @autoclosure () -> String) { write(.debug, message) }

    static func write(_ level: LogLevel, _ message: () -> String) {
        guard enabled(level) else { return }
        // One write(2) per line so lines from several threads never interleave.
        var line = "<\(level.rawValue)>\(level.label): \(message())\n"
        line.withUTF8 { buf in
            var offset = 0
            while offset < buf.count {
                let n = Glibc.write(2, buf.baseAddress! + offset, buf.count - offset)
                if n <= 0 { if n < 0 && errno == EINTR { continue }; return }
                offset += n
            }
        }
    }
}
