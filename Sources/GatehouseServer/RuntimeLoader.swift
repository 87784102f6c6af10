import GatehouseConfig
import GatehouseLog
import GatehouseProxy
import GatehouseTLS

/// Builds a runtime from the configuration files, off the event loops: at
/// start-up from nothing, on reload next to the running one, which supplies
/// the session ticket keys and the certificates of domains whose new files
/// fail. Either it returns a complete runtime or nothing changes (commit or
/// roll back, as hitch does).
enum RuntimeLoader {
    struct Failure: Error {
        let lines: [String]
    }

    /// `acme`: the process's one ACME state, shared by every runtime.
    static func load(path: String, previous: ProxyRuntime?, acme: ACMECertificates) -> Result<ProxyRuntime, Failure> {
        let snapshot: ConfigSnapshot
        do {
            snapshot = try ConfigLoader.load(path: path, previous: previous?.snapshot)
        } catch {
            return .failure(Failure(lines: error.errors.map(\.description)))
        }

        // Certificates are not parsed here: the store loads them on first use
        // (and a background preload right after), keeping what is unchanged.
        let settings = snapshot.acme
        let store = CredentialStore(snapshot: snapshot, capacity: snapshot.tls.certificateCache,
                                    previous: previous?.tls.store, acme: acme,
                                    acmeFiles: { ACMEFiles.certificateFiles($0, settings: settings) })

        let keys: TicketKeys
        switch ticketKeys(snapshot.tls, previous: previous) {
        case .success(let k): keys = k
        case .failure(let f): return .failure(f)
        }
        do {
            let tls = try TLSServer(snapshot: snapshot, store: store, ticketKeys: keys, acme: acme)
            return .success(ProxyRuntime(snapshot: snapshot, tls: tls, previous: previous))
        } catch {
            return .failure(Failure(lines: ["\(snapshot.mainFile): tls: \(error.description)"]))
        }
    }

    /// A fleet's key file is re-read on every reload (that is how a fleet
    /// rotates); process-made keys survive reloads, so visitors keep resuming.
    private static func ticketKeys(_ settings: TLSSettings, previous: ProxyRuntime?) -> Result<TicketKeys, Failure> {
        let old = previous?.tls.ticketKeys
        if settings.ticketKeyFile == nil, let old, previous?.snapshot.tls.ticketKeyFile == nil {
            return .success(old)
        }
        do {
            let keys = try TicketKeys.load(settings)
            if old == nil || settings.ticketKeyFile != nil { Log.info("session tickets: \(keys.source)") }
            return .success(keys)
        } catch {
            guard let old else { return .failure(Failure(lines: [error.description])) }
            Log.error("\(error.description) (keeping the previous ticket keys)")
            return .success(old)
        }
    }
}
