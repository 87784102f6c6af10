@testable import GatehouseHTTP

struct ArraySink: ByteSink {
    var bytes: [UInt8] = []
    mutating func write(_ b: UnsafeRawBufferPointer) { bytes.append(contentsOf: b) }
    var string: String { String(decoding: bytes, as: UTF8.self) }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

func text(_ b: [UInt8], _ span: ByteSpan) -> String { String(decoding: b[span.start..<span.end], as: UTF8.self) }

/// All bytes at once.
func parseRequest(_ b: [UInt8], limits: HTTPLimits = HTTPLimits()) -> RequestHeadResult {
    var parser = RequestHeadParser(limits: limits)
    return b.withUnsafeBytes { parser.parse($0) }
}

func parseRequest(_ s: String, limits: HTTPLimits = HTTPLimits()) -> RequestHeadResult {
    parseRequest(bytes(s), limits: limits)
}

/// One more byte per call, each time from a fresh copy (the buffer moves, as
/// with an evbuffer pullup). Returns the first non-incomplete result.
func parseRequestTrickled(_ b: [UInt8], limits: HTTPLimits = HTTPLimits()) -> RequestHeadResult {
    var parser = RequestHeadParser(limits: limits)
    var result = RequestHeadResult.incomplete
    for n in 0...b.count {
        let copy = Array(b[0..<n])
        result = copy.withUnsafeBytes { parser.parse($0) }
        if result != .incomplete { return result }
    }
    return result
}

func requestHead(_ s: String, limits: HTTPLimits = HTTPLimits()) -> RequestHead? {
    if case .complete(let head) = parseRequest(s, limits: limits) { return head }
    return nil
}

func requestError(_ s: String, limits: HTTPLimits = HTTPLimits()) -> HTTPParseError? {
    if case .error(let e) = parseRequest(s, limits: limits) { return e }
    return nil
}

func requestStatus(_ s: String, limits: HTTPLimits = HTTPLimits()) -> Int? {
    requestError(s, limits: limits)?.status
}

func parseResponse(_ b: [UInt8], method: GatehouseHTTP.Method = .get,
                   limits: HTTPLimits = HTTPLimits()) -> ResponseHeadResult {
    var parser = ResponseHeadParser(limits: limits)
    return b.withUnsafeBytes { parser.parse($0, requestMethod: method) }
}

func responseHead(_ s: String, method: GatehouseHTTP.Method = .get) -> ResponseHead? {
    if case .complete(let head) = parseResponse(bytes(s), method: method) { return head }
    return nil
}

func responseError(_ s: String, method: GatehouseHTTP.Method = .get, limits: HTTPLimits = HTTPLimits()) -> HTTPParseError? {
    if case .error(let e) = parseResponse(bytes(s), method: method, limits: limits) { return e }
    return nil
}

/// Small deterministic PRNG for the property tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
