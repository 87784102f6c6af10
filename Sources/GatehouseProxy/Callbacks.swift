import CLibevent

/// The C edge of the proxy: every libevent callback, and the Unmanaged
/// context pointers they carry. Each trampoline keeps its object alive for the
/// duration of the call, since the handler may close (and release) it.
enum Callbacks {
    // MARK: client connections (context: the ClientConnection, retained while open)

    static let clientRead: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { _, ctx in
        let c = Unmanaged<ClientConnection>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(c) { c.clientReadable() }
    }
    static let clientWrite: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { _, ctx in
        let c = Unmanaged<ClientConnection>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(c) { c.clientWritable() }
    }
    static let clientEvent: @convention(c) (OpaquePointer?, Int16, UnsafeMutableRawPointer?) -> Void = { _, what, ctx in
        let c = Unmanaged<ClientConnection>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(c) { c.clientEvent(what) }
    }
    static let clientTimer: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        let c = Unmanaged<ClientConnection>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(c) { c.timerFired() }
    }

    // MARK: backend connections (context: the BackendConnection, owned by its client or the pool)

    static let backendIO: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, what, ctx in
        let b = Unmanaged<BackendConnection>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(b) { b.ready(what) }
    }

    // MARK: listeners (context: the Listener, owned by its worker)

    static let accept: @convention(c) (OpaquePointer?, Int32, UnsafeMutablePointer<sockaddr>?, Int32, UnsafeMutableRawPointer?) -> Void = { _, fd, address, _, ctx in
        let l = Unmanaged<Listener>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(l) { l.accepted(fd: fd, address: address) }
    }
    static let proxyHeader: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, what, ctx in
        let r = Unmanaged<ProxyHeaderReader>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(r) { r.fired(timedOut: what & Int16(EV_TIMEOUT) != 0) }
    }
    static let acceptError: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { _, ctx in
        let l = Unmanaged<Listener>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(l) { l.acceptFailed() }
    }

    // MARK: worker events (context: the Worker)

    static let workerTick: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        let w = Unmanaged<Worker>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(w) { w.tick() }
    }

    static func install(client c: ClientConnection, bev: OpaquePointer, context: UnsafeMutableRawPointer) {
        bufferevent_setcb(bev, clientRead, clientWrite, clientEvent, context)
    }

}
