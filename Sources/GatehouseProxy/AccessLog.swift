#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import GatehouseConfig
import GatehouseHTTP
import GatehouseLog

/// What one request leaves in the access log. Filled while the exchange runs;
/// only built when an access log is configured.
struct AccessRecord {
    /// Wall clock at the start of the request, seconds since the epoch.
    var start: Double
    var client: [UInt8]
    var sni: [UInt8] = []
    var tlsVersion: [UInt8] = []
    var cipher: [UInt8] = []
    var host: [UInt8] = []
    var method: [UInt8] = []
    var target: [UInt8] = []
    var version: HTTPVersion = .http11
    /// The HTTP/2 stream id; 0 for HTTP/1.x.
    var stream: Int32 = 0
    var userAgent: [UInt8] = []
    var referer: [UInt8] = []
    /// 0 until a status is sent; logged as 499 (client closed first), as nginx does.
    var status = 0
    var bytesIn: UInt64 = 0
    var bytesOut: UInt64 = 0
    var totalSeconds = 0.0
    var backendSeconds: Double?
}

/// Renders access log lines. `combined` is Apache/nginx's combined format with
/// the TLS and timing fields appended as key=value; `json` is one object per line.
enum AccessLogLine {
    static func write<S: ByteSink>(_ r: AccessRecord, format: AccessLogFormat, into sink: inout S) {
        switch format {
        case .combined: combined(r, into: &sink)
        case .json: json(r, into: &sink)
        }
    }

    /// `client - - [01/Dec/2026:23:11:31 +0000] "GET / HTTP/1.1" 200 13 "referer" "agent" host=… sni=… tls=… cipher=… in=… time=… backend_time=…`
    static func combined<S: ByteSink>(_ r: AccessRecord, into sink: inout S) {
        sink.write(orDash: r.client)
        sink.write(" - - [")
        writeCLFTime(r.start, into: &sink)
        sink.write("] \"")
        quoted(r.method, into: &sink)
        sink.write(" ")
        quoted(r.target, into: &sink)
        sink.write(r.stream != 0 ? " HTTP/2.0\" " : r.version == .http10 ? " HTTP/1.0\" " : " HTTP/1.1\" ")
        sink.write(decimal: UInt64(r.status == 0 ? 499 : r.status))
        sink.write(" ")
        sink.write(decimal: r.bytesOut)
        sink.write(" \"")
        quoted(r.referer, dash: true, into: &sink)
        sink.write("\" \"")
        quoted(r.userAgent, dash: true, into: &sink)
        sink.write("\" host=")
        token(r.host, into: &sink)
        sink.write(" sni=")
        token(r.sni, into: &sink)
        sink.write(" tls=")
        token(r.tlsVersion, into: &sink)
        sink.write(" cipher=")
        token(r.cipher, into: &sink)
        sink.write(" in=")
        sink.write(decimal: r.bytesIn)
        sink.write(" time=")
        writeSeconds(r.totalSeconds, into: &sink)
        sink.write(" backend_time=")
        if let b = r.backendSeconds { writeSeconds(b, into: &sink) } else { sink.write("-") }
        if r.stream != 0 {
            sink.write(" stream=")
            sink.write(decimal: UInt64(r.stream))
        }
        sink.write("\n")
    }

    static func json<S: ByteSink>(_ r: AccessRecord, into sink: inout S) {
        sink.write("{\"time\":\"")
        writeISOTime(r.start, into: &sink)
        sink.write("\",\"client\":")
        jsonString(r.client, into: &sink)
        sink.write(",\"sni\":")
        jsonString(r.sni, into: &sink)
        sink.write(",\"tls_version\":")
        jsonString(r.tlsVersion, into: &sink)
        sink.write(",\"cipher\":")
        jsonString(r.cipher, into: &sink)
        sink.write(",\"host\":")
        jsonString(r.host, into: &sink)
        sink.write(",\"method\":")
        jsonString(r.method, into: &sink)
        sink.write(",\"target\":")
        jsonString(r.target, into: &sink)
        if r.stream != 0 {
            sink.write(",\"protocol\":\"HTTP/2.0\",\"stream\":")
            sink.write(decimal: UInt64(r.stream))
        } else {
            sink.write(r.version == .http10 ? ",\"protocol\":\"HTTP/1.0\"" : ",\"protocol\":\"HTTP/1.1\"")
        }
        sink.write(",\"status\":")
        sink.write(decimal: UInt64(r.status == 0 ? 499 : r.status))
        sink.write(",\"bytes_in\":")
        sink.write(decimal: r.bytesIn)
        sink.write(",\"bytes_out\":")
        sink.write(decimal: r.bytesOut)
        sink.write(",\"time_total\":")
        writeSeconds(r.totalSeconds, into: &sink)
        sink.write(",\"time_backend\":")
        if let b = r.backendSeconds { writeSeconds(b, into: &sink) } else { sink.write("null") }
        sink.write(",\"referer\":")
        jsonString(r.referer, into: &sink)
        sink.write(",\"user_agent\":")
        jsonString(r.userAgent, into: &sink)
        sink.write("}\n")
    }

    // MARK: - Escaping

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// Inside "…": bytes outside printable ASCII, `"` and `\` become \xHH (as nginx does).
    static func quoted<S: ByteSink>(_ bytes: [UInt8], dash: Bool = false, into sink: inout S) {
        if bytes.isEmpty && dash { sink.write("-"); return }
        escaped(bytes, lowest: 0x20, into: &sink)
    }

    /// Unquoted key=value fields: no spaces either, "-" when empty.
    static func token<S: ByteSink>(_ bytes: [UInt8], into sink: inout S) {
        if bytes.isEmpty { sink.write("-"); return }
        escaped(bytes, lowest: 0x21, into: &sink)
    }

    private static func escaped<S: ByteSink>(_ bytes: [UInt8], lowest: UInt8, into sink: inout S) {
        for b in bytes {
            if b >= lowest && b < 0x7f && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\") {
                sink.write(byte: b)
            } else {
                sink.write("\\x")
                sink.write(byte: hexDigits[Int(b >> 4)])
                sink.write(byte: hexDigits[Int(b & 0xf)])
            }
        }
    }

    /// RFC 8259 §7 string; bytes that are not valid UTF-8 text are escaped as \u00HH.
    static func jsonString<S: ByteSink>(_ bytes: [UInt8], into sink: inout S) {
        sink.write("\"")
        for b in bytes {
            switch b {
            case UInt8(ascii: "\""): sink.write("\\\"")
            case UInt8(ascii: "\\"): sink.write("\\\\")
            case 0x20..<0x7f: sink.write(byte: b)
            default:
                sink.write("\\u00")
                sink.write(byte: hexDigits[Int(b >> 4)])
                sink.write(byte: hexDigits[Int(b & 0xf)])
            }
        }
        sink.write("\"")
    }

    // MARK: - Numbers and time

    /// Seconds with millisecond precision: "0.003".
    static func writeSeconds<S: ByteSink>(_ seconds: Double, into sink: inout S) {
        let ms = UInt64(max(0, (seconds * 1000).rounded()))
        sink.write(decimal: ms / 1000)
        sink.write(".")
        let frac = ms % 1000
        if frac < 100 { sink.write("0") }
        if frac < 10 { sink.write("0") }
        sink.write(decimal: frac)
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    private static func utc(_ time: Double) -> tm {
        var seconds = time_t(time)
        var t = tm()
        gmtime_r(&seconds, &t)
        return t
    }

    private static func two<S: ByteSink>(_ v: Int32, into sink: inout S) {
        if v < 10 { sink.write("0") }
        sink.write(decimal: UInt64(max(0, v)))
    }

    /// 01/Dec/2026:23:11:31 +0000
    static func writeCLFTime<S: ByteSink>(_ time: Double, into sink: inout S) {
        let t = utc(time)
        two(t.tm_mday, into: &sink)
        sink.write("/")
        months[Int(t.tm_mon)].utf8CString.withUnsafeBytes { sink.write(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
        sink.write("/")
        sink.write(decimal: UInt64(t.tm_year + 1900))
        sink.write(":")
        two(t.tm_hour, into: &sink)
        sink.write(":")
        two(t.tm_min, into: &sink)
        sink.write(":")
        two(t.tm_sec, into: &sink)
        sink.write(" +0000")
    }

    /// 2026-12-01T23:11:31.123Z
    static func writeISOTime<S: ByteSink>(_ time: Double, into sink: inout S) {
        let t = utc(time)
        sink.write(decimal: UInt64(t.tm_year + 1900))
        sink.write("-")
        two(t.tm_mon + 1, into: &sink)
        sink.write("-")
        two(t.tm_mday, into: &sink)
        sink.write("T")
        two(t.tm_hour, into: &sink)
        sink.write(":")
        two(t.tm_min, into: &sink)
        sink.write(":")
        two(t.tm_sec, into: &sink)
        sink.write(".")
        let ms = UInt64((time - time.rounded(.down)) * 1000) % 1000
        if ms < 100 { sink.write("0") }
        if ms < 10 { sink.write("0") }
        sink.write(decimal: ms)
        sink.write("Z")
    }
}

extension ByteSink {
    mutating func write(orDash bytes: [UInt8]) {
        if bytes.isEmpty { write("-") } else { bytes.withUnsafeBytes { write($0) } }
    }
}

/// One worker's access log: lines collect in an evbuffer and are written with
/// one write(2) when 64 KiB have gathered or on the worker's 1-second tick, so
/// the event loop does not wait on the disk per request. Each worker has its
/// own O_APPEND descriptor, so SIGUSR1 (logrotate) reopens without locks.
final class AccessLogWriter {
    let settings: AccessLogSettings
    private var fd: Int32 = -1
    private let buffer: OpaquePointer
    private var failing = false
    static let flushThreshold = 64 * 1024

    init(settings: AccessLogSettings) {
        self.settings = settings
        buffer = evbuffer_new()
        reopen()
    }

    deinit {
        flush()
        if fd >= 0 { Glibc.close(fd) }
        evbuffer_free(buffer)
    }

    func append(_ record: AccessRecord) {
        Evbuffer.render(into: buffer) { AccessLogLine.write(record, format: settings.format, into: &$0) }
        if evbuffer_get_length(buffer) >= Self.flushThreshold { flush() }
    }

    func flush() {
        while evbuffer_get_length(buffer) > 0 {
            guard fd >= 0 else {
                evbuffer_drain(buffer, evbuffer_get_length(buffer))
                return
            }
            let n = evbuffer_write(buffer, fd)
            if n < 0 {
                if errno == EINTR { continue }
                if !failing { Log.error("\(settings.path): access log: \(String(cString: strerror(errno)))") }
                failing = true
                evbuffer_drain(buffer, evbuffer_get_length(buffer))
                return
            }
            failing = false
        }
    }

    /// After logrotate moved the file: flush into the old one, open the new one.
    func reopen() {
        flush()
        let next = open(settings.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        if next < 0 {
            Log.error("\(settings.path): access log: cannot open: \(String(cString: strerror(errno)))")
            return
        }
        if fd >= 0 { Glibc.close(fd) }
        fd = next
    }
}
