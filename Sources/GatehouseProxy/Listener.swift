#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import GatehouseConfig
import GatehouseHTTP
import GatehouseLog

/// One bound listening socket on a worker's event base.
final class Listener {
    unowned let worker: Worker
    let config: ListenerConfig
    let settings: ListenerSettings
    private(set) var handle: OpaquePointer?
    private var paused = false

    init(worker: Worker, config: ListenerConfig) throws(ListenError) {
        self.worker = worker
        self.config = config
        self.settings = ListenerSettings(scheme: config.proto == .https ? .https : .http, httpsPort: config.httpsPort,
                                         sniFallbackProfile: config.sniFallbackProfile,
                                         proxyProtocol: config.proxyProtocol)
        guard let address = SocketAddress(host: config.host, port: config.port) else {
            throw ListenError(description: "listener \(config.host):\(config.port): bad address")
        }
        // SO_REUSEPORT lets every worker bind its own socket on the same port.
        let flags = UInt32(LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC)
        let handle = address.withSockaddr { sa, len in
            evconnlistener_new_bind(worker.base, Callbacks.accept, Unmanaged.passUnretained(self).toOpaque(),
                                    flags, 511, sa, Int32(len))
        }
        guard let handle else {
            throw ListenError(description: "cannot listen on \(address): \(String(cString: strerror(errno)))")
        }
        self.handle = handle
        evconnlistener_set_error_cb(handle, Callbacks.acceptError)
    }

    deinit { close() }

    func close() {
        if let handle { evconnlistener_free(handle) }
        handle = nil
    }

    func accepted(fd: Int32, address: UnsafeMutablePointer<sockaddr>?) {
        if address.map({ Int32($0.pointee.sa_family) != AF_UNIX }) ?? false {
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        worker.accept(fd: fd, address: address.map { UnsafePointer($0) }, listener: self)
    }

    /// Takes every connection waiting in the kernel's accept queue, as the
    /// loop would have (closing the socket would reset them: a TCP balancer
    /// has already forwarded their bytes and cannot retry).
    func acceptQueued() {
        guard let handle else { return }
        let listenFD = evconnlistener_get_fd(handle)
        while true {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &storage) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.accept(listenFD, $0, &length)
                }
            }
            if fd < 0 {
                if errno == EINTR { continue }
                return   // EAGAIN: the queue is empty
            }
            _ = evutil_make_socket_nonblocking(fd)
            _ = evutil_make_socket_closeonexec(fd)
            withUnsafeMutablePointer(to: &storage) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { accepted(fd: fd, address: $0) }
            }
        }
    }

    func acceptFailed() {
        let err = errno
        // EMFILE/ENFILE: back off instead of spinning on a full descriptor table.
        Log.error("accept on \(config.host):\(config.port): \(String(cString: strerror(err)))")
        if err == EMFILE || err == ENFILE { worker.pauseAccepting() }
    }

    func pause() {
        guard let handle, !paused else { return }
        paused = true
        _ = evconnlistener_disable(handle)
    }

    func resume() {
        guard let handle, paused else { return }
        paused = false
        _ = evconnlistener_enable(handle)
    }
}

public struct ListenError: Error, CustomStringConvertible, Sendable {
    public let description: String
}
