#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import GatehouseConfig
import GatehouseLog
import GatehouseProxy
import GatehouseTLS

public struct StartupError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// The process: loads the configuration, builds the runtime, runs one worker
/// thread per configured worker, and handles signals on the main thread.
public final class Server {
    private let configPath: String
    private var workers: [WorkerThread] = []
    private let control: OpaquePointer
    private var signalEvents: [OpaquePointer] = []
    private var stopping = false
    private var metrics: MetricsEndpoint?

    public init(configPath: String) {
        // Before any event_base exists: lets other threads wake a worker's loop.
        _ = evthread_use_pthreads()
        signal(SIGPIPE, SIG_IGN)
        self.configPath = configPath
        self.control = event_base_new()
    }

    /// Loads everything, binds every listener, then serves until SIGTERM/SIGINT.
    public func run() throws(StartupError) {
        let runtime = try Self.loadRuntime(path: configPath)
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
                                          domains: snapshot.domains.count)
        }
        installSignals()
        for w in workers { w.start() }
        let listening = snapshot.listeners.map { "\($0.proto.rawValue)://\($0.host):\($0.port)" }.joined(separator: " ")
        Log.info("ready: \(snapshot.domains.count) domains, \(count) worker\(count == 1 ? "" : "s"), listening on \(listening)")
        event_base_dispatch(control)
        for w in workers { w.join() }
        Log.info("stopped")
    }

    static func loadRuntime(path: String) throws(StartupError) -> ProxyRuntime {
        let snapshot: ConfigSnapshot
        do {
            snapshot = try ConfigLoader.load(path: path)
        } catch {
            throw StartupError(description: error.description)
        }
        let (credentials, failures) = CredentialSet.load(snapshot)
        // One broken domain never takes the others down: it is left out.
        for failure in failures { Log.error("\(failure) (domain disabled)") }
        for warning in CredentialSet.expiryWarnings(snapshot, credentials) {
            if warning.expired { Log.error(warning.text) } else { Log.warning(warning.text) }
        }
        do {
            let keys = try TicketKeys.load(snapshot.tls)
            Log.info("session tickets: \(keys.source)")
            return ProxyRuntime(snapshot: snapshot,
                                tls: try TLSServer(snapshot: snapshot, credentials: credentials, ticketKeys: keys))
        } catch let error as TicketKeyError {
            throw StartupError(description: error.description)
        } catch let error as TLSSetupError {
            throw StartupError(description: error.description)
        } catch {
            throw StartupError(description: "\(error)")
        }
    }

    private func installSignals() {
        let context = Unmanaged.passUnretained(self).toOpaque()
        for sig in [SIGTERM, SIGINT] {
            if let ev = event_new(control, sig, Int16(EV_SIGNAL | EV_PERSIST), ServerCallbacks.signal, context) {
                event_add(ev, nil)
                signalEvents.append(ev)
            }
        }
    }

    func received(signal sig: Int32) {
        guard !stopping else {
            Log.notice("second signal: stopping now")
            exit(0)
        }
        stopping = true
        metrics?.close()
        let drain = workers.first?.worker.runtimeTimeouts.drain ?? 30
        Log.info("signal \(sig): draining connections (up to \(Int(drain)) s)")
        for w in workers { w.requestDrain() }
        for ev in signalEvents { event_del(ev) }
        // Keep SIGINT/SIGTERM for the "second signal" path above.
        for ev in signalEvents { event_add(ev, nil) }
        event_base_loopexit(control, nil)
    }
}

/// A worker and the thread running its loop.
final class WorkerThread {
    let worker: Worker
    private var thread = pthread_t()
    private var drainEvent: OpaquePointer?
    private var deadlineEvent: OpaquePointer?

    init(worker: Worker) {
        self.worker = worker
        let context = Unmanaged.passUnretained(self).toOpaque()
        drainEvent = event_new(worker.eventBase, -1, 0, ServerCallbacks.drain, context)
        deadlineEvent = event_new(worker.eventBase, -1, 0, ServerCallbacks.drainDeadline, context)
    }

    deinit {
        if let drainEvent { event_free(drainEvent) }
        if let deadlineEvent { event_free(deadlineEvent) }
    }

    func start() {
        let context = Unmanaged.passUnretained(self).toOpaque()
        pthread_create(&thread, nil, { arg in
            let w = Unmanaged<WorkerThread>.fromOpaque(arg!).takeUnretainedValue()
            w.worker.run()
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
        var tv = timeval(tv_sec: Int(worker.runtimeTimeouts.drain), tv_usec: 0)
        event_add(deadlineEvent, &tv)
        worker.beginDrain()
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

    static let signal: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { sig, _, ctx in
        let s = Unmanaged<Server>.fromOpaque(ctx!).takeUnretainedValue()
        s.received(signal: sig)
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
