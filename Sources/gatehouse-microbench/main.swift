// Micro-benchmark for the HTTP/1.1 head parsers and the header rewrite
// (GatehouseHTTP only: no sockets, no TLS, no libevent). Run via scripts/bench.
//
//   gatehouse-microbench [--iterations N] [--runs R] [--case NAME]
//   gatehouse-microbench --allocs-probe N [--case NAME]   (no output; for valgrind)
//   gatehouse-microbench --list
//
// Each case mirrors what ClientConnection does per request: one parser reused
// for every message, the head handled (and the parser reset) while the
// `.complete(head)` value is still alive, output rendered into a sink that
// itself never allocates (a fixed buffer), so allocations counted are the
// parser's and the writers'.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import GatehouseHTTP

// MARK: - Inputs

let browserGET =
    "GET /account/orders?page=2&sort=date HTTP/1.1\r\n"
    + "Host: shop.example.com\r\n"
    + "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n"
    + "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8\r\n"
    + "Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n"
    + "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    + "Referer: https://shop.example.com/account\r\n"
    + "Cookie: session=3f9a1c0e7b2d4e6f8a0b1c2d3e4f5a6b; _ga=GA1.2.1234567890.1700000000; theme=dark\r\n"
    + "sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
    + "Upgrade-Insecure-Requests: 1\r\n"
    + "Sec-Fetch-Site: same-origin\r\n"
    + "Sec-Fetch-Mode: navigate\r\n"
    + "Connection: keep-alive\r\n"
    + "\r\n"

let curlGET =
    "GET /healthz HTTP/1.1\r\n"
    + "Host: api.example.com\r\n"
    + "User-Agent: curl/7.88.1\r\n"
    + "Accept: */*\r\n"
    + "\r\n"

let apiPOST =
    "POST /api/v1/orders HTTP/1.1\r\n"
    + "Host: api.example.com\r\n"
    + "User-Agent: python-requests/2.31.0\r\n"
    + "Accept-Encoding: gzip, deflate\r\n"
    + "Accept: application/json\r\n"
    + "Connection: keep-alive\r\n"
    + "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U\r\n"
    + "Content-Type: application/json\r\n"
    + "Content-Length: 348\r\n"
    + "\r\n"

let backendResponse =
    "HTTP/1.1 200 OK\r\n"
    + "Server: nginx/1.24.0\r\n"
    + "Date: Tue, 14 May 2024 10:21:33 GMT\r\n"
    + "Content-Type: text/html; charset=utf-8\r\n"
    + "Content-Length: 5123\r\n"
    + "Connection: keep-alive\r\n"
    + "Cache-Control: private, no-cache\r\n"
    + "Set-Cookie: session=3f9a1c0e7b2d4e6f8a0b1c2d3e4f5a6b; Path=/; HttpOnly; Secure; SameSite=Lax\r\n"
    + "X-Request-Id: 7d2c1f4a-9b1e-4c3a-8f6d-2e5b0a9c1d3f\r\n"
    + "\r\n"

/// Bytes in a buffer allocated once (the parser gets an UnsafeRawBufferPointer,
/// as it does from an evbuffer pullup).
struct Input {
    let bytes: UnsafeRawBufferPointer
    init(_ s: String) {
        let utf8 = Array(s.utf8)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: utf8.count, alignment: 16)
        buf.copyBytes(from: utf8)
        bytes = UnsafeRawBufferPointer(buf)
    }
}

// MARK: - Sink

/// A ByteSink over a fixed buffer: rewinds per message, never allocates.
struct FixedSink: ByteSink {
    let base: UnsafeMutableRawPointer
    let capacity: Int
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    @inline(__always) mutating func write(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        guard n > 0 else { return }
        precondition(count + n <= capacity, "FixedSink overflow")
        (base + count).copyMemory(from: bytes.baseAddress!, byteCount: n)
        count += n
    }
}

// MARK: - Cases

/// Keeps results observable so the optimizer cannot drop the work.
@inline(never) func blackhole(_ x: Int) {
    if x == -0x5eed { print("") }
}

/// One benchmark: `run(n)` performs the operation n times.
struct Case {
    let name: String
    let input: Input
    let description: String
    let run: (Int) -> Void
}

// The head is handled and the parser reset while the head is still alive,
// in a function taking it as a parameter, like ClientConnection.startRequest
// (which calls parser.reset() before returning).
@inline(never)
func consumeRequest(_ head: RequestHead, _ parser: inout RequestHeadParser) {
    blackhole(head.headLength &+ head.headers.count)
    parser.reset()
}

@inline(never)
func rewriteRequest(_ head: RequestHead, _ bytes: UnsafeRawBufferPointer, _ clientAddress: UnsafeRawBufferPointer,
                    _ parser: inout RequestHeadParser, _ sink: inout FixedSink) {
    sink.count = 0
    writeUpstreamRequestHead(head, in: bytes, clientAddress: clientAddress, scheme: .https,
                             upgrade: head.wantsUpgrade && head.framing == .none, into: &sink)
    blackhole(sink.count)
    parser.reset()
}

@inline(never)
func consumeResponse(_ head: ResponseHead, _ parser: inout ResponseHeadParser) {
    blackhole(head.headLength &+ head.headers.count)
    parser.reset()
}

@inline(never)
func rewriteResponse(_ head: ResponseHead, _ bytes: UnsafeRawBufferPointer, _ hsts: UnsafeRawBufferPointer,
                     _ parser: inout ResponseHeadParser, _ sink: inout FixedSink) {
    sink.count = 0
    writeClientResponseHead(head, in: bytes, framing: head.framing, keepAlive: head.keepAlive,
                            clientVersion: .http11, hsts: hsts, into: &sink)
    blackhole(sink.count)
    parser.reset()
}

func fail(_ what: String) -> Never {
    var line = Array("gatehouse-microbench: \(what)\n".utf8)
    _ = line.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

func parseRequestCase(_ name: String, _ text: String, _ what: String) -> Case {
    let input = Input(text)
    return Case(name: name, input: input, description: what) { n in
        var parser = RequestHeadParser()
        let bytes = input.bytes
        for _ in 0..<n {
            guard case .complete(let head) = parser.parse(bytes) else { fail("\(name): input does not parse") }
            consumeRequest(head, &parser)
        }
    }
}

func rewriteRequestCase(_ name: String, _ text: String, _ what: String, _ clientAddress: Input) -> Case {
    let input = Input(text)
    return Case(name: name, input: input, description: what) { n in
        var parser = RequestHeadParser()
        var sink = FixedSink(capacity: 64 * 1024)
        defer { sink.base.deallocate() }
        let bytes = input.bytes
        for _ in 0..<n {
            guard case .complete(let head) = parser.parse(bytes) else { fail("\(name): input does not parse") }
            rewriteRequest(head, bytes, clientAddress.bytes, &parser, &sink)
        }
    }
}

let cases: [Case] = {
    let response = Input(backendResponse)
    let clientAddress = Input("203.0.113.7")
    let hsts = Input("max-age=31536000; includeSubDomains")
    return [
        parseRequestCase("parse_request_browser", browserGET, "RequestHeadParser.parse, browser GET"),
        parseRequestCase("parse_request_curl", curlGET, "RequestHeadParser.parse, curl GET"),
        parseRequestCase("parse_request_post", apiPOST, "RequestHeadParser.parse, API POST with Content-Length"),
        rewriteRequestCase("rewrite_request_browser", browserGET, "parse + writeUpstreamRequestHead, browser GET", clientAddress),
        rewriteRequestCase("rewrite_request_curl", curlGET, "parse + writeUpstreamRequestHead, curl GET", clientAddress),
        rewriteRequestCase("rewrite_request_post", apiPOST, "parse + writeUpstreamRequestHead, API POST", clientAddress),
        Case(name: "parse_response_backend", input: response,
             description: "ResponseHeadParser.parse, backend 200 with Content-Length") { n in
            var parser = ResponseHeadParser()
            let bytes = response.bytes
            for _ in 0..<n {
                guard case .complete(let head) = parser.parse(bytes, requestMethod: .get) else {
                    fail("parse_response_backend: input does not parse")
                }
                consumeResponse(head, &parser)
            }
        },
        Case(name: "rewrite_response_backend", input: response,
             description: "ResponseHeadParser.parse + writeClientResponseHead (HSTS), backend 200") { n in
            var parser = ResponseHeadParser()
            var sink = FixedSink(capacity: 64 * 1024)
            defer { sink.base.deallocate() }
            let bytes = response.bytes
            for _ in 0..<n {
                guard case .complete(let head) = parser.parse(bytes, requestMethod: .get) else {
                    fail("rewrite_response_backend: input does not parse")
                }
                rewriteResponse(head, bytes, hsts.bytes, &parser, &sink)
            }
        },
    ]
}()

// MARK: - Timing

@inline(__always) func nowNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

func timed(_ c: Case, _ n: Int) -> UInt64 {
    let t0 = nowNanoseconds()
    c.run(n)
    return nowNanoseconds() - t0
}

func formatFixed(_ x: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let v = (x * scale).rounded()
    let whole = Int(v / scale)
    guard decimals > 0 else { return String(whole) }
    var frac = String(Int(v - Double(whole) * scale))
    while frac.count < decimals { frac = "0" + frac }
    return "\(whole).\(frac)"
}

func headerCount(_ input: Input) -> Int {
    var n = -2  // start line and final empty line
    for i in 1..<input.bytes.count where input.bytes[i] == 0x0A && input.bytes[i - 1] == 0x0D { n += 1 }
    return n + 1
}

// MARK: - Command line

struct Options {
    var iterations: Int?
    var runs = 5
    var allocsProbe: Int?
    var selected: String?
    var list = false
}

func parseOptions(_ arguments: [String]) -> Options {
    var o = Options()
    var args = arguments.dropFirst()
    func value(_ flag: String) -> String {
        guard let v = args.popFirst() else { fail("\(flag) needs a value") }
        return v
    }
    func positive(_ flag: String) -> Int {
        let v = value(flag)
        guard let n = Int(v), n > 0 else { fail("\(flag): not a positive integer: \(v)") }
        return n
    }
    while let arg = args.popFirst() {
        switch arg {
        case "--iterations", "-n": o.iterations = positive(arg)
        case "--runs": o.runs = positive(arg)
        case "--allocs-probe": o.allocsProbe = positive(arg)
        case "--case": o.selected = value(arg)
        case "--list": o.list = true
        case "-h", "--help":
            print("""
                usage: gatehouse-microbench [--iterations N] [--runs R] [--case NAME]
                       gatehouse-microbench --allocs-probe N [--case NAME]
                       gatehouse-microbench --list
                  --iterations N    iterations per timed run (default: calibrated to ~0.5 s per case)
                  --runs R          timed runs per case; the median is printed (default 5)
                  --allocs-probe N  run each case exactly N times, print nothing (for valgrind)
                  --case NAME       only this case (see --list)
                """)
            exit(0)
        default: fail("unknown argument \(arg) (try --help)")
        }
    }
    return o
}

let options = parseOptions(CommandLine.arguments)
let iterations = options.iterations, runs = options.runs

var chosen = cases
if let selected = options.selected {
    chosen = cases.filter { $0.name == selected }
    if chosen.isEmpty { fail("unknown case \(selected) (try --list)") }
}

if options.list {
    for c in chosen {
        print("\(c.name)  bytes=\(c.input.bytes.count)  fields=\(headerCount(c.input))  # \(c.description)")
    }
    exit(0)
}

if let n = options.allocsProbe {
    for c in chosen { c.run(n) }
    exit(0)
}

let targetRunNanoseconds = 500_000_000.0 / Double(runs)
for c in chosen {
    // Warm-up, and calibration when --iterations is not given.
    var n = iterations ?? 1000
    if iterations == nil {
        var t = timed(c, n)
        while t < 20_000_000 {
            n *= 4
            t = timed(c, n)
        }
        n = max(1, Int(targetRunNanoseconds / (Double(t) / Double(n))))
    } else {
        _ = timed(c, min(n, 10_000))
    }
    var samples: [Double] = []
    for _ in 0..<runs { samples.append(Double(timed(c, n)) / Double(n)) }
    samples.sort()
    let median = samples.count % 2 == 1
        ? samples[samples.count / 2]
        : (samples[samples.count / 2 - 1] + samples[samples.count / 2]) / 2
    let perSecond = median > 0 ? 1e9 / median : 0
    let padded = c.name + String(repeating: " ", count: max(1, 26 - c.name.count))
    print("\(padded)ns/op=\(formatFixed(median, 1))  heads/s=\(Int(perSecond))  "
        + "min=\(formatFixed(samples.first!, 1))  max=\(formatFixed(samples.last!, 1))  n=\(n)x\(runs)")
}
