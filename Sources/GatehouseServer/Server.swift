#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import CShims
import Synchronization
import GatehouseConfig
import GatehouseLog
import GatehouseProxy
import GatehouseTLS

public struct StartupError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// The process: loads the configuration, builds the runtime, runs one worker
/// thread per configured worker, and handles signals on the main thread:
/// SIGHUP reloads, SIGTERM/SIGINT drain and stop.
public final class Server {
    private let configPath: String
    private var workers: [WorkerThread] = []
    private let control: OpaquePointer
    private var signalEvents: [OpaquePointer] = []
    private var stopping = false
    private var metrics: MetricsEndpoint?
    private var runtime: ProxyRuntime?
    private let notify = SystemdNotify()
    private var reloads = (succeeded: 0, failed: 0)
    private var preloader: Preloader?
    /// Activated (from worker threads) when a worker's loop returns.
    private var workerDoneEvent: OpaquePointer?
    /// ACME: one state for the life of the process, shared by every runtime.
    private let acmeCertificates = ACMECertificates()
    private var acme: ACMEService?

    public init(configPath: String) {
        // Before any event_base exists: lets other threads wake a worker's loop.
        _ = evthread_use_pthreads()
        signal(SIGPIPE, SIG_IGN)
        self.configPath = configPath
        self.control = event_base_new()
    }

    /// Loads everything, binds every listener, then serves until SIGTERM/SIGINT.
    public func run() throws(StartupError) {
        let runtime: ProxyRuntime
        switch RuntimeLoader.load(path: configPath, previous: nil, acme: acmeCertificates) {
        case .success(let r): runtime = r
        case .failure(let f): throw StartupError(description: f.lines.joined(separator: "\n"))
        }
        self.runtime = runtime
        // Parsing thousands of domain files leaves freed heap behind; give it back.
        _ = gh_malloc_trim()
        // From here on, keep what is freed: proxying moves 32 KiB evbuffer
        // chains through malloc, and glibc's default (trim a worker arena's top
        // beyond 128 KiB) returned them to the kernel and faulted them back in,
        // ~13 % of the cycles of a bulk transfer. A reload still trims explicitly.
        _ = gh_malloc_keep_freed(64 << 20, 4 << 20)
        let snapshot = runtime.snapshot
        let count = snapshot.workers == 0 ? max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) : snapshot.workers
        for i in 0..<count {
            do {
                workers.append(WorkerThread(worker: try Worker(index: i, runtime: runtime)))
            } catch {
                throw StartupError(description: error.description)
            }
        }
        if let settings = snapshot.metrics {
            metrics = try MetricsEndpoint(base: control, settings: settings, stats: workers.map(\.worker.stats),
                                          runtime: runtime)
        }
        // Bound: now stop being root, before any thread or request exists.
        // As nginx does, keys are read while still root (up to the cache
        // size), so root-only key files work; later loads (reload, cache
        // misses) run as `user` and need read access.
        if geteuid() == 0, snapshot.privileges.user != nil { runtime.tls.store.preload() }
        try Privileges.drop(snapshot.privileges, mainFile: snapshot.mainFile, handOver: snapshot.acme.map { [$0.storage] } ?? [])
        installSignals()
        workerDoneEvent = event_new(control, -1, 0, ServerCallbacks.workerDone, Unmanaged.passUnretained(self).toOpaque())
        for w in workers { w.start(done: workerDoneEvent) }
        let listening = snapshot.listeners.map { "\($0.proto.rawValue)://\($0.address)" }.joined(separator: " ")
        Log.info("ready: \(snapshot.domains.count) domains, \(count) worker\(count == 1 ? "" : "s"), listening on \(listening)")
        notify.send("READY=1", status(snapshot))
        preloadInBackground(runtime.tls.store)
        // After the privilege drop: storage files belong to the service user.
        let acme = ACMEService(certificates: acmeCertificates)
        acme.configure(snapshot)
        self.acme = acme
        metrics?.acme = acme
        event_base_dispatch(control)
        for w in workers { w.join() }
        preloader?.stop()
        acme.stop()
        Log.info("stopped")
    }

    private func status(_ snapshot: ConfigSnapshot) -> String {
        "STATUS=\(snapshot.domains.count) domains, \(workers.reduce(0) { $0 + $1.worker.stats.openConnections }) connections"
    }

    private func installSignals() {
        let context = Unmanaged.passUnretained(self).toOpaque()
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGUSR1] {
            if let ev = event_new(control, sig, Int16(EV_SIGNAL | EV_PERSIST), ServerCallbacks.signal, context) {
                event_add(ev, nil)
                signalEvents.append(ev)
            }
        }
    }

    func received(signal sig: Int32) {
        if sig == SIGHUP {
            if !stopping { reload() }
            return
        }
        if sig == SIGUSR1 {
            // logrotate moved the access log: every worker reopens its own descriptor.
            for w in workers { w.reopenAccessLog() }
            return
        }
        guard !stopping else {
            // The operator wants out now: skip the drain and the exit
            // handlers (OpenSSL's would run under the workers' feet).
            Log.notice("second signal: stopping now")
            _exit(0)
        }
        stopping = true
        notify.send("STOPPING=1")
        acme?.requestStop()
        // The control loop keeps running while the workers drain: /healthz
        // answers 503 and a second signal is still heard.
        metrics?.draining = true
        let drain = workers.first?.worker.runtimeTimeouts.drain ?? 30
        Log.info("signal \(sig): draining connections (up to \(Int(drain)) s)")
        for w in workers { w.requestDrain() }
    }

    /// On the control thread, after a worker's loop has returned (two that
    /// end together may wake it once).
    func workerFinished() {
        if workers.allSatisfy({ $0.finished.load(ordering: .acquiring) }) { event_base_loopbreak(control) }
    }

    /// Re-reads every file on this (control) thread while the workers serve;
    /// then hands the new runtime to each worker. New connections use it;
    /// connections in flight finish on the runtime they were accepted under.
    private func reload() {
        guard let current = runtime else { return }
        notify.send("RELOADING=1", "MONOTONIC_USEC=\(SystemdNotify.monotonicMicroseconds())")
        Log.info("reloading \(configPath)")
        switch RuntimeLoader.load(path: configPath, previous: current, acme: acmeCertificates) {
        case .failure(let f):
            reloads.failed += 1
            for line in f.lines { Log.error(line) }
            Log.error("reload failed: keeping the running configuration (\(current.snapshot.domains.count) domains)")
            notify.send("READY=1", "STATUS=reload failed; serving the previous configuration")
        case .success(let next):
            for warning in Self.restartOnlyChanges(from: current.snapshot, to: next.snapshot) { Log.warning(warning) }
            runtime = next
            acme?.configure(next.snapshot)
            for w in workers { w.adopt(next) }
            _ = gh_malloc_trim()
            metrics?.runtime = next
            reloads.succeeded += 1
            Log.info("reloaded: \(next.snapshot.domains.count) domains")
            notify.send("READY=1", status(next.snapshot))
            preloadInBackground(next.tls.store)
        }
        metrics?.reloads = reloads
    }

    /// Certificates are loaded on first use; a thread loads them right after
    /// start or reload (up to the cache size), so problems are logged at once
    /// and first visitors do not wait. The workers never wait for it. A new
    /// preload stops the previous one; the process joins it before exiting,
    /// since OpenSSL's exit handlers must not run under a thread parsing keys.
    private func preloadInBackground(_ store: CredentialStore) {
        preloader?.stop()
        preloader = Preloader(store: store)
    }

    /// Listeners, worker count and the metrics address are bound at start;
    /// a reload keeps them as they are and says so.
    static func restartOnlyChanges(from old: ConfigSnapshot, to new: ConfigSnapshot) -> [String] {
        var warnings: [String] = []
        if old.listeners != new.listeners {
            warnings.append("\(new.mainFile): listener: changes take effect after a restart")
        }
        if old.workers != new.workers {
            warnings.append("\(new.mainFile): workers: changes take effect after a restart")
        }
        if old.metrics != new.metrics {
            warnings.append("\(new.mainFile): metrics: changes take effect after a restart")
        }
        return warnings
    }
}

/// A worker and the thread running its loop.
final class WorkerThread {
    let worker: Worker
    private var thread = pthread_t()
    private var drainEvent: OpaquePointer?
    private var deadlineEvent: OpaquePointer?
    private var adoptEvent: OpaquePointer?
    private var reopenEvent: OpaquePointer?
    private var doneEvent: OpaquePointer?
    /// Set by the worker's thread when its loop has returned.
    let finished = Atomic<Bool>(false)
    /// Written by the control thread, taken by the worker's thread.
    private let pending = Mutex<ProxyRuntime?>(nil)

    init(worker: Worker) {
        self.worker = worker
        let context = Unmanaged.passUnretained(self).toOpaque()
        drainEvent = event_new(worker.eventBase, -1, 0, ServerCallbacks.drain, context)
        deadlineEvent = event_new(worker.eventBase, -1, 0, ServerCallbacks.drainDeadline, context)
        adoptEvent = event_new(worker.eventBase, -1, 0, ServerCallbacks.adopt, context)
        reopenEvent = event_new(worker.eventBase, -1, 0, ServerCallbacks.reopen, context)
    }

    deinit {
        if let drainEvent { event_free(drainEvent) }
        if let deadlineEvent { event_free(deadlineEvent) }
        if let adoptEvent { event_free(adoptEvent) }
        if let reopenEvent { event_free(reopenEvent) }
    }

    /// Called from the control thread.
    func reopenAccessLog() {
        event_active(reopenEvent, 0, 0)
    }

    /// Called from the control thread: the worker switches at its next loop turn.
    func adopt(_ runtime: ProxyRuntime) {
        pending.withLock { $0 = runtime }
        event_active(adoptEvent, 0, 0)
    }

    /// On the worker thread.
    func adoptPending() {
        guard let runtime = pending.withLock({ slot in defer { slot = nil }; return slot }) else { return }
        worker.adopt(runtime)
    }

    /// `done`: an event on the control loop, activated when this loop returns.
    func start(done: OpaquePointer?) {
        doneEvent = done
        let context = Unmanaged.passUnretained(self).toOpaque()
        pthread_create(&thread, nil, { arg in
            let w = Unmanaged<WorkerThread>.fromOpaque(arg!).takeUnretainedValue()
            w.worker.run()
            w.finished.store(true, ordering: .releasing)
            // Thread-safe with evthread.
            if let done = w.doneEvent { event_active(done, 0, 0) }
            return nil
        }, context)
    }

    func join() { pthread_join(thread, nil) }

    /// Called from the main thread: wakes the worker's loop (thread-safe with evthread).
    func requestDrain() {
        event_active(drainEvent, 0, 0)
    }

    /// On the worker thread.
    func drainNow() {
        let t = worker.runtimeTimeouts
        var tv = timeval(seconds: t.stopGrace + t.drain)
        event_add(deadlineEvent, &tv)
        worker.beginDrain(grace: t.stopGrace)
    }
}

enum ServerCallbacks {
    static let metricsAccept: @convention(c) (OpaquePointer?, Int32, UnsafeMutablePointer<sockaddr>?, Int32, UnsafeMutableRawPointer?) -> Void = { _, fd, _, _, ctx in
        Unmanaged<MetricsEndpoint>.fromOpaque(ctx!).takeUnretainedValue().accepted(fd: fd)
    }
    static let metricsRead: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { bev, ctx in
        guard let bev, let ctx else { return }
        Unmanaged<MetricsEndpoint>.fromOpaque(ctx).takeUnretainedValue().readable(bev)
    }
    static let metricsFlushed: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { bev, _ in
        guard let bev, evbuffer_get_length(bufferevent_get_output(bev)) == 0 else { return }
        bufferevent_free(bev)
    }
    static let metricsEvent: @convention(c) (OpaquePointer?, Int16, UnsafeMutableRawPointer?) -> Void = { bev, _, _ in
        // EOF, error or timeout: nothing to keep.
        if let bev { bufferevent_free(bev) }
    }

    static let workerDone: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        Unmanaged<Server>.fromOpaque(ctx!).takeUnretainedValue().workerFinished()
    }
    static let signal: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { sig, _, ctx in
        let s = Unmanaged<Server>.fromOpaque(ctx!).takeUnretainedValue()
        s.received(signal: sig)
    }
    static let reopen: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        Unmanaged<WorkerThread>.fromOpaque(ctx!).takeUnretainedValue().worker.reopenAccessLog()
    }
    static let adopt: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        Unmanaged<WorkerThread>.fromOpaque(ctx!).takeUnretainedValue().adoptPending()
    }
    static let drain: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        Unmanaged<WorkerThread>.fromOpaque(ctx!).takeUnretainedValue().drainNow()
    }
    static let drainDeadline: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        let w = Unmanaged<WorkerThread>.fromOpaque(ctx!).takeUnretainedValue()
        Log.warning("worker \(w.worker.workerIndex): drain timeout, closing \(w.worker.openConnections) connections")
        w.worker.stop()
    }
}

/// One background certificate preload: a joinable thread that stops between
/// two domains when asked.
final class Preloader: Sendable {
    let store: CredentialStore
    let cancelled = Atomic<Bool>(false)
    private let thread = Mutex<pthread_t?>(nil)

    init(store: CredentialStore) {
        self.store = store
        var handle = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        if pthread_create(&handle, nil, { arg in
            let job = Unmanaged<Preloader>.fromOpaque(arg!).takeRetainedValue()
            job.store.preload(until: { job.cancelled.load(ordering: .relaxed) })
            return nil
        }, context) == 0 {
            thread.withLock { $0 = handle }
        } else {
            Unmanaged<Preloader>.fromOpaque(context).release()
        }
    }

    /// Asks the thread to stop and waits for it (at most one domain's load).
    func stop() {
        cancelled.store(true, ordering: .relaxed)
        guard let handle = thread.withLock({ slot in defer { slot = nil }; return slot }) else { return }
        pthread_join(handle, nil)
    }
}
