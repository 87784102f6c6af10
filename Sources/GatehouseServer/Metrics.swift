#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import GatehouseConfig
import GatehouseHTTP
import GatehouseLog
import GatehouseProxy
import GatehouseTLS

/// The Prometheus text exposition (format 0.0.4) of every worker's counters,
/// summed at scrape time.
enum MetricsText {
    struct Snapshot {
        var counters: [WorkerStats.Counter: UInt64] = [:]
        var openConnections = 0
        var domains = 0
        var workers = 0
        var reloads = (succeeded: 0, failed: 0)
        /// Non-cumulative, BackendLatency.bounds.count + 1 buckets.
        var latencyBuckets: [UInt64] = Array(repeating: 0, count: BackendLatency.bounds.count + 1)
        var latencySum = 0.0
        /// Domains with at least one handshake: (primary name, counts by version).
        var domainHandshakes: [(name: String, counts: [UInt64])] = []
        var certificates = (loaded: 0, capacity: 0, loads: 0, failures: 0)
        /// nil without `[acme]`.
        var acme: ACMEReport?
    }

    static func collect(_ stats: [WorkerStats], runtime: ProxyRuntime) -> Snapshot {
        var s = Snapshot(domains: runtime.snapshot.domains.count, workers: stats.count)
        for w in stats {
            for c in WorkerStats.Counter.allCases { s.counters[c, default: 0] += w.value(c) }
            s.openConnections += w.openConnections
            let latency = w.backendLatency()
            for (i, n) in latency.buckets.enumerated() { s.latencyBuckets[i] += n }
            s.latencySum += latency.sum
        }
        let store = runtime.tls.store
        s.certificates = (store.loadedCount, store.capacity, store.loadCount, store.failureCount)
        for (domain, h) in zip(runtime.snapshot.domains, runtime.handshakes) {
            let counts = TLSVersion.allCases.map { h.value($0) }
            if counts.contains(where: { $0 > 0 }) { s.domainHandshakes.append((domain.primaryName, counts)) }
        }
        return s
    }

    static func render(_ s: Snapshot) -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for sample in samples { out += "\(name)\(sample.labels) \(sample.value)\n" }
        }
        func n(_ c: WorkerStats.Counter) -> String { String(s.counters[c] ?? 0) }
        family("gatehouse_connections_accepted_total", "counter", "Client connections accepted.",
               [("", n(.connectionsAccepted))])
        family("gatehouse_connections_refused_total", "counter",
               "Connections closed at accept: over max_connections_per_client, or without a valid PROXY header.", [
            ("{reason=\"per_client_limit\"}", n(.connectionsRefusedPerClient)),
            ("{reason=\"proxy_header\"}", n(.proxyHeaderErrors)),
        ])
        family("gatehouse_requests_refused_total", "counter",
               "Requests Gatehouse answered itself because of what the client sent: a Host not of the handshake's domain (421), a Host no domain claims on port 80 (404), a non-token ACME challenge path (301), an unknown Expect (417).",
               [Refusal.misdirected, .unknownHost, .acmePath, .expectation].map {
                   ("{reason=\"\($0.label)\"}", n(WorkerStats.counter($0)))
               })
        family("gatehouse_connections_open", "gauge", "Client connections open now.", [("", String(s.openConnections))])
        family("gatehouse_tls_handshakes_total", "counter", "Completed TLS handshakes by protocol version.", [
            ("{version=\"TLSv1\"}", n(.handshakesTLS10)), ("{version=\"TLSv1.1\"}", n(.handshakesTLS11)),
            ("{version=\"TLSv1.2\"}", n(.handshakesTLS12)), ("{version=\"TLSv1.3\"}", n(.handshakesTLS13)),
        ])
        let failures: [(HandshakeFailure, WorkerStats.Counter)] = [
            (.protocolVersion, .failedProtocolVersion), (.noSharedCipher, .failedNoSharedCipher),
            (.unrecognizedName, .failedUnrecognizedName), (.inappropriateFallback, .failedInappropriateFallback),
            (.other, .failedOther), (.aborted, .failedAborted),
        ]
        family("gatehouse_tls_handshake_failures_total", "counter", "Failed TLS handshakes by reason.",
               failures.map { ("{reason=\"\($0.0.rawValue)\"}", n($0.1)) })
        family("gatehouse_http_responses_total", "counter", "Responses sent to clients by status class.", [
            ("{class=\"1xx\"}", n(.responses1xx)), ("{class=\"2xx\"}", n(.responses2xx)),
            ("{class=\"3xx\"}", n(.responses3xx)), ("{class=\"4xx\"}", n(.responses4xx)),
            ("{class=\"5xx\"}", n(.responses5xx)),
        ])
        family("gatehouse_http_requests_total", "counter", "Requests by the protocol the client spoke (an HTTP/2 stream is one).", [
            ("{protocol=\"HTTP/1.1\"}", n(.requestsHTTP1)), ("{protocol=\"HTTP/2\"}", n(.requestsHTTP2)),
        ])
        family("gatehouse_http2_connections_total", "counter", "Client connections that chose h2 in ALPN.",
               [("", n(.connectionsHTTP2))])
        family("gatehouse_http2_streams_reset_total", "counter",
               "HTTP/2 streams Gatehouse reset: malformed requests, stalled streams, truncated responses.",
               [("", n(.http2StreamsReset))])
        family("gatehouse_http2_glitch_goaways_total", "counter",
               "HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM: too many protocol errors or resets (Rapid Reset, MadeYouReset).",
               [("", n(.http2Calm))])
        family("gatehouse_http_requests_rejected_total", "counter", "Requests refused by the parser (400, 413, 414, 431, 505).",
               [("", n(.requestsRejected))])
        family("gatehouse_backend_errors_total", "counter", "Backend failures by kind.", [
            ("{kind=\"connect\"}", n(.backendConnectErrors)), ("{kind=\"timeout\"}", n(.backendTimeouts)),
            ("{kind=\"reset\"}", n(.backendResetErrors)),
        ])
        var perDomain: [(labels: String, value: String)] = []
        for d in s.domainHandshakes {
            for (version, n) in zip(TLSVersion.allCases, d.counts) where n > 0 {
                perDomain.append(("{domain=\"\(d.name)\",version=\"\(version.name)\"}", String(n)))
            }
        }
        family("gatehouse_domain_tls_handshakes_total", "counter",
               "Completed TLS handshakes per domain (primary name) and protocol version; domains without any are left out.",
               perDomain)
        var cumulative: UInt64 = 0
        var buckets: [(labels: String, value: String)] = []
        for (i, n) in s.latencyBuckets.enumerated() {
            cumulative += n
            let le = i < BackendLatency.bounds.count ? String(BackendLatency.bounds[i]) : "+Inf"
            buckets.append(("_bucket{le=\"\(le)\"}", String(cumulative)))
        }
        buckets.append(("_sum", String(s.latencySum)))
        buckets.append(("_count", String(cumulative)))
        family("gatehouse_backend_response_seconds", "histogram",
               "Time from sending a request to the backend to its response head.", buckets)
        family("gatehouse_certificates_loaded", "gauge", "Domains whose certificates are in the cache now.",
               [("", String(s.certificates.loaded))])
        family("gatehouse_certificate_cache_size", "gauge", "[tls] certificate_cache.", [("", String(s.certificates.capacity))])
        family("gatehouse_certificate_loads_total", "counter", "Certificate loads from disk since the last reload, by result.", [
            ("{result=\"success\"}", String(s.certificates.loads - s.certificates.failures)),
            ("{result=\"failure\"}", String(s.certificates.failures)),
        ])
        family("gatehouse_domains", "gauge", "Domains in the running configuration.", [("", String(s.domains))])
        family("gatehouse_workers", "gauge", "Worker threads.", [("", String(s.workers))])
        family("gatehouse_reloads_total", "counter", "Configuration reloads (SIGHUP) by result.", [
            ("{result=\"success\"}", String(s.reloads.succeeded)), ("{result=\"failure\"}", String(s.reloads.failed)),
        ])
        family("gatehouse_acme_challenges_answered_total", "counter", "ACME validations Gatehouse answered, by challenge type.", [
            ("{type=\"http-01\"}", n(.acmeChallengesAnswered)), ("{type=\"tls-alpn-01\"}", n(.acmeValidationHandshakes)),
        ])
        if let acme = s.acme {
            family("gatehouse_acme_orders_total", "counter", "ACME orders (one per domain file and attempt) by outcome.", [
                ("{outcome=\"issued\"}", String(acme.ordersIssued)), ("{outcome=\"failed\"}", String(acme.ordersFailed)),
            ])
            family("gatehouse_acme_domains_waiting", "gauge", "acme = true domains still waiting for their first certificate.",
                   [("", String(acme.waitingForFirst))])
            family("gatehouse_acme_certificate_expiry_seconds", "gauge", "Seconds until each ACME domain's certificate expires.",
                   acme.expiry.map { ("{domain=\"\($0.name)\"}", String($0.seconds)) })
        }
        return out
    }
}

/// `[metrics] address`: a small plain-HTTP endpoint on the control thread's
/// event base, away from the workers: GET /metrics, and GET /healthz for load
/// balancers (200 while serving, 503 from SIGTERM on, while connections
/// drain). One request per connection.
final class MetricsEndpoint {
    private let base: OpaquePointer
    private var handle: OpaquePointer?
    private let stats: [WorkerStats]
    /// The running runtime; replaced by the control thread on reload.
    var runtime: ProxyRuntime
    var reloads = (succeeded: 0, failed: 0)
    /// Set once the ACME threads run.
    var acme: ACMEService?
    /// Set by the control thread when SIGTERM arrives.
    var draining = false

    init(base: OpaquePointer, settings: MetricsSettings, stats: [WorkerStats], runtime: ProxyRuntime) throws(StartupError) {
        self.base = base
        self.stats = stats
        self.runtime = runtime
        guard let address = SocketAddress(host: settings.host, port: settings.port) else {
            throw StartupError(description: "metrics.address: bad address \(settings.host):\(settings.port)")
        }
        let flags = UInt32(LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC)
        handle = address.withSockaddr { sa, len in
            evconnlistener_new_bind(base, ServerCallbacks.metricsAccept, Unmanaged.passUnretained(self).toOpaque(),
                                    flags, 64, sa, Int32(len))
        }
        guard handle != nil else {
            throw StartupError(description: "cannot listen on \(address) for metrics: \(String(cString: strerror(errno)))")
        }
    }

    deinit { close() }

    func close() {
        if let handle { evconnlistener_free(handle) }
        handle = nil
    }

    func accepted(fd: Int32) {
        guard let bev = bufferevent_socket_new(base, fd, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else {
            Glibc.close(fd)
            return
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        bufferevent_set_timeouts(bev, &timeout, &timeout)
        // Unretained: the endpoint lives as long as the control loop.
        bufferevent_setcb(bev, ServerCallbacks.metricsRead, nil, ServerCallbacks.metricsEvent,
                          Unmanaged.passUnretained(self).toOpaque())
        _ = bufferevent_enable(bev, Int16(EV_READ))
    }

    /// Answers once the request head is complete; anything malformed gets 400.
    func readable(_ bev: OpaquePointer) {
        let input = bufferevent_get_input(bev)
        let length = min(evbuffer_get_length(input), 8192)
        guard let start = evbuffer_pullup(input, length) else { return }
        var parser = RequestHeadParser(limits: HTTPLimits(maxRequestLineBytes: 1024, maxHeaderBytes: 8192, maxHeaderCount: 50))
        let bytes = UnsafeRawBufferPointer(start: start, count: length)
        let status: Int
        var body = ""
        var contentType = "text/plain; charset=utf-8"
        var isHead = false
        switch parser.parse(bytes) {
        case .incomplete:
            if length < 8192 { return }
            status = 431
        case .error(let error):
            status = error.status
        case .complete(let head):
            let path = bytes[span: head.path]
            isHead = head.methodKind == .head
            if head.methodKind != .get && head.methodKind != .head {
                status = 405
            } else if path.elementsEqual("/metrics".utf8) {
                status = 200
                contentType = "text/plain; version=0.0.4; charset=utf-8"
                var snapshot = MetricsText.collect(stats, runtime: runtime)
                snapshot.reloads = reloads
                snapshot.acme = acme?.status
                body = MetricsText.render(snapshot)
            } else if path.elementsEqual("/healthz".utf8) {
                // Draining: a balancer stops sending new connections while
                // the ones in flight finish.
                status = draining ? 503 : 200
                body = draining ? "draining\n" : "ok\n"
            } else {
                status = 404
            }
        }
        _ = bufferevent_disable(bev, Int16(EV_READ))
        var response = "HTTP/1.1 \(status) \(String(describing: reasonPhrase(for: status)))\r\n"
            + "Content-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        if !isHead { response += body }
        response.withUTF8 { _ = bufferevent_write(bev, $0.baseAddress, $0.count) }
        // Closed by the write callback once flushed.
        bufferevent_setcb(bev, nil, ServerCallbacks.metricsFlushed, ServerCallbacks.metricsEvent, nil)
    }
}
