import Synchronization
import GatehouseTLS

/// One worker's counters. Only its own thread writes them (relaxed atomic
/// adds on memory no other worker writes, so nothing on the hot path is
/// shared); the metrics endpoint reads every worker's and sums.
public final class WorkerStats: Sendable {
    public enum Counter: Int, CaseIterable, Sendable {
        case connectionsAccepted
        case handshakesTLS10, handshakesTLS11, handshakesTLS12, handshakesTLS13
        case failedProtocolVersion, failedNoSharedCipher, failedUnrecognizedName
        case failedInappropriateFallback, failedOther, failedAborted
        case responses1xx, responses2xx, responses3xx, responses4xx, responses5xx
        case backendConnectErrors, backendTimeouts, backendResetErrors
        case requestsRejected
        case connectionsRefusedPerClient, proxyHeaderErrors
        case refusedMisdirected, refusedUnknownHost, refusedACMEPath, refusedExpectation
        /// Request heads by protocol (HTTP/1.x requests, HTTP/2 streams).
        case requestsHTTP1, requestsHTTP2
        case connectionsHTTP2
        /// HTTP/2 streams Gatehouse reset (malformed, stalled, truncated).
        case http2StreamsReset
        /// HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM (too many glitches).
        case http2Calm
        /// ACME validations Gatehouse answered: http-01 tokens on port 80,
        /// tls-alpn-01 handshakes (RFC 8737).
        case acmeChallengesAnswered, acmeValidationHandshakes
    }

    private let counters: InlineArray<40, Atomic<UInt64>> = InlineArray { _ in Atomic<UInt64>(0) }
    private let open = Atomic<Int>(0)
    /// BackendLatency.bounds.count + 1 buckets.
    let latencyBuckets: InlineArray<12, Atomic<UInt64>> = InlineArray { _ in Atomic<UInt64>(0) }
    let latencySumMicros = Atomic<UInt64>(0)

    public init() {
        precondition(Counter.allCases.count <= 40)
    }

    @inline(__always) func add(_ c: Counter, _ n: UInt64 = 1) {
        counters[c.rawValue].wrappingAdd(n, ordering: .relaxed)
    }

    public func value(_ c: Counter) -> UInt64 { counters[c.rawValue].load(ordering: .relaxed) }

    public var openConnections: Int { open.load(ordering: .relaxed) }
    func setOpenConnections(_ n: Int) { open.store(n, ordering: .relaxed) }

    func countHandshake(version: TLSVersion?) {
        switch version {
        case .tls1_0: add(.handshakesTLS10)
        case .tls1_1: add(.handshakesTLS11)
        case .tls1_2: add(.handshakesTLS12)
        case .tls1_3: add(.handshakesTLS13)
        case nil: break
        }
    }

    func countHandshakeFailure(_ reason: HandshakeFailure) {
        switch reason {
        case .protocolVersion: add(.failedProtocolVersion)
        case .noSharedCipher: add(.failedNoSharedCipher)
        case .unrecognizedName: add(.failedUnrecognizedName)
        case .inappropriateFallback: add(.failedInappropriateFallback)
        case .other: add(.failedOther)
        case .aborted: add(.failedAborted)
        }
    }

    /// Counts a refusal and writes its (rate-limited) log line.
    func refused(_ refusal: Refusal, _ message: @autoclosure () -> String) {
        add(Self.counter(refusal))
        refusal.log.write(message())
    }

    public static func counter(_ refusal: Refusal) -> Counter {
        switch refusal {
        case .misdirected: .refusedMisdirected
        case .unknownHost: .refusedUnknownHost
        case .acmePath: .refusedACMEPath
        case .expectation: .refusedExpectation
        case .perClientLimit: .connectionsRefusedPerClient
        }
    }

    func countResponse(status: Int) {
        switch status {
        case 100..<200: add(.responses1xx)
        case 200..<300: add(.responses2xx)
        case 300..<400: add(.responses3xx)
        case 400..<500: add(.responses4xx)
        default: add(.responses5xx)
        }
    }
}

/// Completed handshakes of one domain by protocol version, shared by every
/// worker (relaxed atomic adds) and carried across reloads by primary name, so
/// a host can tell a customer whether anybody still uses TLS 1.0 on their
/// legacy domain.
public final class DomainHandshakes: Sendable {
    private let byVersion: InlineArray<4, Atomic<UInt64>> = InlineArray { _ in Atomic<UInt64>(0) }

    public init() {}

    func count(_ version: TLSVersion) {
        byVersion[Self.index(version)].wrappingAdd(1, ordering: .relaxed)
    }

    public func value(_ version: TLSVersion) -> UInt64 {
        byVersion[Self.index(version)].load(ordering: .relaxed)
    }

    private static func index(_ v: TLSVersion) -> Int {
        switch v {
        case .tls1_0: 0
        case .tls1_1: 1
        case .tls1_2: 2
        case .tls1_3: 3
        }
    }
}

/// Backend response time (request sent → response head), Prometheus buckets.
public enum BackendLatency {
    public static let bounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
}

extension WorkerStats {
    /// Bucket i counts observations <= bounds[i]; the last is +Inf.
    func observeBackend(seconds: Double) {
        var i = 0
        while i < BackendLatency.bounds.count && seconds > BackendLatency.bounds[i] { i += 1 }
        latencyBuckets[i].wrappingAdd(1, ordering: .relaxed)
        latencySumMicros.wrappingAdd(UInt64(max(0, seconds * 1e6)), ordering: .relaxed)
    }

    /// Non-cumulative counts per bucket (the renderer accumulates) and the sum in seconds.
    public func backendLatency() -> (buckets: [UInt64], sum: Double) {
        var buckets: [UInt64] = []
        for i in 0 ... BackendLatency.bounds.count { buckets.append(latencyBuckets[i].load(ordering: .relaxed)) }
        return (buckets, Double(latencySumMicros.load(ordering: .relaxed)) / 1e6)
    }
}
