#if canImport(Glibc)
import Glibc
#endif
import CCurl

/// One answer of the ACME server.
public struct HTTPResponse: Sendable {
    public let status: Int
    /// In order, names as sent; only the final response's (no 1xx).
    public let headers: [(name: String, value: String)]
    public let body: [UInt8]

    /// The first field named `name` (case-insensitive, RFC 9110 §5.1).
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name.lowercased() == lower }?.value
    }

    /// RFC 8555 §6.5.1: the nonce for the next request.
    public var replayNonce: String? { header("Replay-Nonce") }
    /// RFC 8555 §7.3, §7.4: the new account's or order's URL.
    public var location: String? { header("Location") }

    /// Retry-After (RFC 9110 §10.2.3) as seconds from `now`: delay-seconds
    /// or an IMF-fixdate; nil when absent or unreadable; never negative.
    public func retryAfter(now: Int = Int(time(nil))) -> Int? {
        guard let raw = header("Retry-After")?.trimmingCharacters(in: " \t") else { return nil }
        if !raw.isEmpty, raw.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
            return Int(raw.prefix(9)) ?? nil
        }
        guard let date = HTTPDate.seconds(imfFixdate: raw) else { return nil }
        return max(0, date - now)
    }
}

/// The ASCII decimal number in `bytes[range]`; nil if any byte is not a digit.
/// Shared by the date parsers (IMF-fixdate, RFC 3339).
func decimal(_ bytes: [UInt8], _ range: Range<Int>) -> Int? {
    var v = 0
    for i in range {
        guard bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") else { return nil }
        v = v * 10 + Int(bytes[i] - UInt8(ascii: "0"))
    }
    return v
}

/// RFC 9110 §5.6.7 IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", the form
/// senders must use; the obsolete forms are not read (a CA sends this one).
enum HTTPDate {
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// Seconds since the Unix epoch, or nil.
    static func seconds(imfFixdate text: String) -> Int? {
        let b = Array(text.utf8)
        guard b.count == 29, b[3] == UInt8(ascii: ","), b[4] == 0x20, b[7] == 0x20, b[11] == 0x20, b[16] == 0x20,
              b[19] == UInt8(ascii: ":"), b[22] == UInt8(ascii: ":"), b[25] == 0x20, text.hasSuffix(" GMT") else { return nil }
        func number(_ range: Range<Int>) -> Int? { decimal(b, range) }
        guard let day = number(5 ..< 7), let year = number(12 ..< 16), let hour = number(17 ..< 19),
              let minute = number(20 ..< 22), let second = number(23 ..< 25),
              let month = months.firstIndex(of: String(decoding: b[8 ..< 11], as: UTF8.self)),
              (1 ... 31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        return daysFromCivil(year: year, month: month + 1, day: day) * 86400 + hour * 3600 + minute * 60 + second
    }

    /// Days since 1970-01-01 in the proleptic Gregorian calendar: years
    /// counted from March, so the leap day is the last day of a year.
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400                                   // 0 ... 399
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        let skip = Set(set.utf8)
        let bytes = Array(utf8)
        guard let first = bytes.firstIndex(where: { !skip.contains($0) }),
              let last = bytes.lastIndex(where: { !skip.contains($0) }) else { return "" }
        return String(decoding: bytes[first ... last], as: UTF8.self)
    }
}

/// A small blocking HTTPS client for the ACME thread, on libcurl (no
/// hand-written HTTP): GET, HEAD and POST with `application/jose+json`
/// (RFC 8555 §6.2). https only, redirects not followed (the protocol gives
/// URLs explicitly), the server verified against the system's CAs or
/// `trust`. One connection is reused across requests. Not thread-safe: one
/// per thread.
public final class ACMEHTTPClient {
    public struct Options: Sendable {
        /// PEM CA bundle to verify the server with, instead of the system's.
        public var trust: String?
        /// RFC 8555 §6.1: every client sends one.
        public var userAgent: String
        public var connectTimeout: Double
        /// The whole request, connection included.
        public var timeout: Double
        /// Larger bodies fail the request: nothing ACME sends comes close.
        public var maxBodyBytes: Int

        public init(trust: String? = nil, userAgent: String = "Gatehouse-ACME", connectTimeout: Double = 10,
                    timeout: Double = 30, maxBodyBytes: Int = 1 << 20) {
            self.trust = trust
            self.userAgent = userAgent
            self.connectTimeout = connectTimeout
            self.timeout = timeout
            self.maxBodyBytes = maxBodyBytes
        }
    }

    public let options: Options
    private let curl: UnsafeMutableRawPointer
    private let errorBuffer: UnsafeMutablePointer<CChar>

    /// curl_global_init before the first handle (thread-safe in libcurl
    /// 7.84+, and run once here).
    private static let initialized: Bool = curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK

    public init(options: Options = Options()) throws(ACMEError) {
        guard Self.initialized, let curl = curl_easy_init() else { throw ACMEError("libcurl cannot be initialized") }
        self.curl = curl
        self.options = options
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
    }

    deinit {
        curl_easy_cleanup(curl)
        errorBuffer.deallocate()
    }

    public func get(_ url: String) throws(ACMEError) -> HTTPResponse {
        try perform(url, method: .get)
    }

    /// RFC 8555 §7.2: newNonce answers HEAD.
    public func head(_ url: String) throws(ACMEError) -> HTTPResponse {
        try perform(url, method: .head)
    }

    /// A JWS body (RFC 8555 §6.2: Content-Type application/jose+json).
    /// `accept` asks for a media type: the certificate chain is
    /// application/pem-certificate-chain (§7.4.2).
    public func post(_ url: String, jose body: [UInt8], accept: String? = nil) throws(ACMEError) -> HTTPResponse {
        try perform(url, method: .post(body), accept: accept)
    }

    enum Method { case get, head, post([UInt8]) }

    /// What the callbacks collect while curl runs.
    final class Transfer {
        let limit: Int
        var body: [UInt8] = []
        var headers: [(name: String, value: String)] = []
        var tooLarge = false
        init(limit: Int) { self.limit = limit }
    }

    private func perform(_ url: String, method: Method, accept: String? = nil) throws(ACMEError) -> HTTPResponse {
        // Options are set afresh each time; the connection cache survives.
        curl_easy_reset(curl)
        errorBuffer[0] = 0
        let transfer = Transfer(limit: options.maxBodyBytes)
        let context = Unmanaged.passRetained(transfer)
        defer { context.release() }
        var fields: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(fields) }

        var ok = true
        func set(_ code: CURLcode) { if code != CURLE_OK { ok = false } }
        set(gh_curl_setopt_pointer(curl, CURLOPT_ERRORBUFFER, errorBuffer))
        set(gh_curl_setopt_string(curl, CURLOPT_URL, url))
        // Never plain HTTP, never another scheme, not even by redirect.
        set(gh_curl_setopt_string(curl, CURLOPT_PROTOCOLS_STR, "https"))
        set(gh_curl_setopt_string(curl, CURLOPT_REDIR_PROTOCOLS_STR, "https"))
        set(gh_curl_setopt_long(curl, CURLOPT_FOLLOWLOCATION, 0))
        set(gh_curl_setopt_long(curl, CURLOPT_SSL_VERIFYPEER, 1))
        set(gh_curl_setopt_long(curl, CURLOPT_SSL_VERIFYHOST, 2))
        set(gh_curl_setopt_long(curl, CURLOPT_SSLVERSION, Int(CURL_SSLVERSION_TLSv1_2)))
        if let trust = options.trust { set(gh_curl_setopt_string(curl, CURLOPT_CAINFO, trust)) }
        // No signals: this runs on a thread of a process that handles its own.
        set(gh_curl_setopt_long(curl, CURLOPT_NOSIGNAL, 1))
        set(gh_curl_setopt_long(curl, CURLOPT_CONNECTTIMEOUT_MS, Int(options.connectTimeout * 1000)))
        set(gh_curl_setopt_long(curl, CURLOPT_TIMEOUT_MS, Int(options.timeout * 1000)))
        set(gh_curl_setopt_string(curl, CURLOPT_USERAGENT, options.userAgent))
        set(gh_curl_setopt_off(curl, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(options.maxBodyBytes)))
        set(gh_curl_setopt_callback(curl, CURLOPT_WRITEFUNCTION, Self.onBody))
        set(gh_curl_setopt_pointer(curl, CURLOPT_WRITEDATA, context.toOpaque()))
        set(gh_curl_setopt_callback(curl, CURLOPT_HEADERFUNCTION, Self.onHeader))
        set(gh_curl_setopt_pointer(curl, CURLOPT_HEADERDATA, context.toOpaque()))
        // A header value must not end the line early (no CR or LF).
        if let accept {
            guard !accept.utf8.contains(where: { $0 == 0x0d || $0 == 0x0a }) else { throw ACMEError("\(url): Accept with a line break") }
            fields = curl_slist_append(fields, "Accept: " + accept)
        }
        switch method {
        case .get:
            set(gh_curl_setopt_long(curl, CURLOPT_HTTPGET, 1))
            set(gh_curl_setopt_slist(curl, CURLOPT_HTTPHEADER, fields))
        case .head:
            set(gh_curl_setopt_long(curl, CURLOPT_NOBODY, 1))
            set(gh_curl_setopt_slist(curl, CURLOPT_HTTPHEADER, fields))
        case .post(let body):
            fields = curl_slist_append(fields, "Content-Type: application/jose+json")
            // Without this curl waits for 100 Continue before a body over 1 KiB.
            fields = curl_slist_append(fields, "Expect:")
            set(gh_curl_setopt_long(curl, CURLOPT_POST, 1))
            set(gh_curl_setopt_off(curl, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count)))
            body.withUnsafeBytes { set(gh_curl_setopt_pointer(curl, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!))) }
            set(gh_curl_setopt_slist(curl, CURLOPT_HTTPHEADER, fields))
        }
        guard ok else { throw ACMEError("\(url): libcurl refused an option") }

        let result = curl_easy_perform(curl)
        // curl refuses by Content-Length, our callback by the bytes.
        if transfer.tooLarge || result == CURLE_FILESIZE_EXCEEDED { throw ACMEError("\(url): response body larger than \(options.maxBodyBytes) bytes") }
        guard result == CURLE_OK else {
            let detail = errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: curl_easy_strerror(result))
            throw ACMEError("\(url): \(detail)")
        }
        var status = 0
        _ = gh_curl_getinfo_long(curl, CURLINFO_RESPONSE_CODE, &status)
        return HTTPResponse(status: status, headers: transfer.headers, body: transfer.body)
    }

    private static let onBody: gh_curl_data_callback = { data, size, count, context in
        guard let context else { return 0 }
        let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
        let n = size * count
        guard transfer.body.count + n <= transfer.limit else {
            transfer.tooLarge = true
            return 0   // curl stops with CURLE_WRITE_ERROR
        }
        if n > 0, let data { transfer.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: n)) }
        return n
    }

    /// One header line per call, the status line included; a new status
    /// line (after a 1xx) starts the field list over.
    private static let onHeader: gh_curl_data_callback = { data, size, count, context in
        guard let context, let data else { return 0 }
        let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
        let n = size * count
        let line = String(decoding: UnsafeRawBufferPointer(start: data, count: n), as: UTF8.self).trimmingCharacters(in: "\r\n")
        if line.hasPrefix("HTTP/") {
            transfer.headers.removeAll()
        } else if let colon = line.firstIndex(of: ":") {
            let name = String(line[..<colon])
            let value = String(line[line.index(after: colon)...]).trimmingCharacters(in: " \t")
            transfer.headers.append((name, value))
        }
        return n
    }
}
