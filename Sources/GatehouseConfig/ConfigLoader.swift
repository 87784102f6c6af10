import GatehouseLog
import TOMLKit

public enum ConfigLoader {
    /// Reads the main file and every `*.toml` in domains_dir (sorted, non-recursive; other
    /// files ignored). Collects ALL errors (every file is checked, not just the first
    /// failure) and throws them together.
    ///
    /// `previous`: the running snapshot; domain files whose stamp (device,
    /// inode, size, mtime) is unchanged are taken from it instead of being
    /// parsed again, so a reload of 100,000 domains with one changed parses one.
    public static func load(path: String, previous: ConfigSnapshot? = nil) throws(ConfigErrors) -> ConfigSnapshot {
        let mainFile = FileSystem.absolute(path, relativeTo: FileSystem.currentDirectory())
        var diag = Diagnostics()
        guard let root = parse(mainFile, &diag) else { throw ConfigErrors(diag.errors) }
        defer { root.clear() }
        let main = TOMLSection(table: root, file: mainFile, path: "")
        main.rejectUnknownKeys(allowed: mainKeys, &diag)

        let dirText = main.string("domains_dir", &diag) ?? "domains.d"
        let domainsDirectory = FileSystem.absolute(dirText, relativeTo: FileSystem.directory(of: mainFile))
        var domainsDirUsable = false
        switch FileSystem.kind(domainsDirectory) {
        case .directory: domainsDirUsable = true
        case .missing: diag.add(mainFile, "domains_dir", "directory \"\(domainsDirectory)\" does not exist")
        case .file, .other: diag.add(mainFile, "domains_dir", "\"\(domainsDirectory)\" is not a directory")
        }

        var workers = 1
        if let w = main.int("workers", &diag) {
            if (0 ... maxWorkers).contains(w) {
                workers = w
            } else {
                diag.add(mainFile, "workers", "must be between 0 and \(maxWorkers) (0 = one per core), got \(w)")
            }
        }

        let privileges = PrivilegeSettings(
            user: main.string("user", &diag), group: main.string("group", &diag),
            allowRoot: main.bool("allow_root", &diag) ?? false)
        if privileges.user?.isEmpty == true { diag.add(mainFile, "user", "must not be empty") }
        if privileges.group != nil && privileges.user == nil { diag.add(mainFile, "group", "needs user") }
        if privileges.user != nil && privileges.allowRoot { diag.add(mainFile, "allow_root", "contradicts user") }

        let listeners = parseListeners(main, &diag)
        let timeouts = parseTimeouts(main, &diag)
        let limits = parseLimits(main, &diag)

        var defaultDomain: String?
        var ticketKeyFile: String?
        var certificateCache = 10_000
        if let tls = main.section("tls", &diag) {
            tls.rejectUnknownKeys(allowed: ["default_domain", "ticket_key_file", "certificate_cache"], &diag)
            if let n = tls.int("certificate_cache", &diag) {
                if n >= 1 && n <= 10_000_000 {
                    certificateCache = n
                } else {
                    diag.add(mainFile, "tls.certificate_cache", "must be between 1 and 10000000, got \(n)")
                }
            }
            defaultDomain = tls.string("default_domain", &diag).map(normalizeQuery)
            if let raw = tls.string("ticket_key_file", &diag) {
                if raw.isEmpty {
                    diag.add(mainFile, "tls.ticket_key_file", "must not be empty")
                } else {
                    ticketKeyFile = FileSystem.absolute(raw, relativeTo: FileSystem.directory(of: mainFile))
                }
            }
        }
        var metrics: MetricsSettings?
        if let section = main.section("metrics", &diag) {
            section.rejectUnknownKeys(allowed: ["address"], &diag)
            if let raw = section.string("address", required: true, &diag) {
                switch Syntax.listenAddress(raw) {
                case .success(let a): metrics = MetricsSettings(host: a.host, port: a.port)
                case .failure(let m): diag.add(mainFile, "metrics.address", m.text)
                }
            }
        }
        var accessLog: AccessLogSettings?
        if let section = main.section("access_log", &diag) {
            section.rejectUnknownKeys(allowed: ["path", "format"], &diag)
            let path = section.string("path", required: true, &diag)
            var format = AccessLogFormat.combined
            if let raw = section.string("format", &diag) {
                if let f = AccessLogFormat(rawValue: raw) {
                    format = f
                } else {
                    diag.add(mainFile, "access_log.format", "unknown format \"\(raw)\" (combined, json)")
                }
            }
            if let path {
                if path.isEmpty {
                    diag.add(mainFile, "access_log.path", "must not be empty")
                } else {
                    accessLog = AccessLogSettings(
                        path: FileSystem.absolute(path, relativeTo: FileSystem.directory(of: mainFile)), format: format)
                }
            }
        }
        let acmeTable = main.table["acme"] != nil
        let acme = parseACME(main, listeners: listeners, &diag)
        if defaultDomain == nil, let l = listeners.first(where: { $0.sniFallbackProfile != nil }) {
            diag.add(mainFile, "listener", "sni_fallback_profile on \(l.address) needs [tls] default_domain (the domain served without SNI)")
        }

        // Domain files: every one is checked even after failures.
        var domains: [DomainConfig] = []
        var owners: [String: String] = [:]
        var stamps: [FileStamp?] = []
        let errorsBeforeDomains = diag.errors.count
        if domainsDirUsable {
            switch FileSystem.listFiles(domainsDirectory, suffix: ".toml") {
            case .success(let files):
                domains.reserveCapacity(files.count)
                stamps.reserveCapacity(files.count)
                var unchanged: [String: (stamp: FileStamp, index: Int)] = [:]
                if let previous {
                    unchanged.reserveCapacity(previous.domains.count)
                    for (i, d) in previous.domains.enumerated() where i < previous.domainStamps.count {
                        if let stamp = previous.domainStamps[i] { unchanged[d.file] = (stamp, i) }
                    }
                }
                for name in files {
                    let file = FileSystem.join(domainsDirectory, name)
                    // No stamp (the file vanished): parsing reports why.
                    let stamp = FileStamp(path: file)
                    if let old = unchanged[file], old.stamp == stamp, let p = previous,
                       let domain = reuse(p.domains[old.index], id: domains.count, owners: &owners, &diag) {
                        domains.append(domain)
                        stamps.append(stamp)
                    } else if let domain = parseDomain(file, id: domains.count, owners: &owners,
                                                       mainWithoutACME: acmeTable ? nil : mainFile, &diag) {
                        domains.append(domain)
                        stamps.append(stamp)
                    }
                }
            case .failure(let message):
                diag.add(mainFile, "domains_dir", "\"\(domainsDirectory)\": \(message.text)")
            }
        }
        // A domain file reused unchanged was not parsed: the main file may
        // have lost its [acme] table since.
        if !acmeTable {
            for d in domains where d.acme { diag.add(d.file, "acme", needsACMETable(mainFile)) }
        }
        let domainErrors = diag.errors.count > errorsBeforeDomains
        let names = NameIndex(domains: domains)

        if let wanted = defaultDomain {
            // When some domain file failed, check against every name that was declared so a
            // typo elsewhere does not also produce a misleading default_domain error.
            let known = domainErrors ? NameIndex(owners.map { (name: $0.key, domain: 0) }) : names
            if wanted.contains("*") {
                diag.add(mainFile, "tls.default_domain", "\"\(wanted)\" is a wildcard; name a concrete host name")
            } else if known.lookup(wanted) == nil {
                diag.add(mainFile, "tls.default_domain", "\"\(wanted)\" is not one of the configured names")
            }
        }

        guard diag.errors.isEmpty else { throw ConfigErrors(diag.errors) }

        if domains.isEmpty {
            Log.warning("\(domainsDirectory): no domain files (*.toml); every request will be refused")
        }
        if !listeners.contains(where: { $0.proto == .https }) {
            Log.warning("\(mainFile): no https listener configured")
        }

        var snapshot = ConfigSnapshot(
            mainFile: mainFile,
            domainsDirectory: domainsDirectory,
            workers: workers,
            listeners: listeners,
            timeouts: timeouts,
            limits: limits,
            tls: TLSSettings(defaultDomain: defaultDomain, ticketKeyFile: ticketKeyFile,
                             certificateCache: certificateCache),
            metrics: metrics,
            accessLog: accessLog,
            privileges: privileges,
            acme: acme,
            domains: domains,
            names: names)
        snapshot.domainStamps = stamps
        return snapshot
    }

    // MARK: - Main file

    static let mainKeys: Set<String> = ["domains_dir", "workers", "listener", "timeouts", "limits", "tls", "metrics", "access_log",
                                          "user", "group", "allow_root", "acme"]
    static let acmeKeys: Set<String> = ["directory", "contact", "storage", "trust", "challenges", "orders_per_3h"]
    static let listenerKeys: Set<String> = ["address", "protocol", "https_port", "sni_fallback_profile", "proxy_protocol"]
    static let domainKeys: Set<String> = [
        "names", "backend", "certificate", "key", "tls_profile", "redirect_http",
        "hsts_max_age", "hsts_include_subdomains", "hsts_preload", "max_body_bytes",
        "accept_any_host", "upgrade_insecure_requests", "http2", "acme",
    ]
    static let knownProfiles = TLSProfileName.allCases.map(\.rawValue).joined(separator: ", ")
    /// Catches typos like `workers = 40000`; far above any real core count.
    static let maxWorkers = 1024
    /// A day; longer timeouts are almost certainly unit mistakes (ms for s) and would
    /// overflow timer arithmetic elsewhere if absurdly large.
    static let maxTimeoutSeconds = 86400.0
    /// HSTS preload lists require at least a year.
    static let preloadMinimumMaxAge = 31_536_000

    static func parseListeners(_ main: TOMLSection, _ diag: inout Diagnostics) -> [ListenerConfig] {
        let file = main.file
        guard let sections = main.sectionArray("listener", &diag) else {
            if main.table["listener"] == nil {
                diag.add(file, "listener", "at least one [[listener]] is required")
            }
            return []
        }
        if sections.isEmpty {
            diag.add(file, "listener", "at least one [[listener]] is required")
        }
        var listeners: [ListenerConfig] = []
        var seen: [String: String] = [:]   // canonical address -> key path of first use
        for section in sections {
            section.rejectUnknownKeys(allowed: listenerKeys, &diag)
            let address = section.string("address", required: true, &diag)
            let protoText = section.string("protocol", required: true, &diag)
            let httpsPortValue = section.int("https_port", &diag)
            let fallbackText = section.string("sni_fallback_profile", &diag)
            let proxyProtocol = section.bool("proxy_protocol", &diag) ?? false

            var parsedAddress: (host: String, port: UInt16)?
            if let address {
                switch Syntax.listenAddress(address) {
                case .success(let a):
                    let canonical = a.host.contains(":") ? "[\(a.host)]:\(a.port)" : "\(a.host):\(a.port)"
                    if let first = seen[canonical] {
                        diag.add(file, section.keyPath("address"), "address \(canonical) is already used by \(first)")
                    } else {
                        seen[canonical] = section.path
                        parsedAddress = a
                    }
                case .failure(let m): diag.add(file, section.keyPath("address"), m.text)
                }
            }

            var proto: ListenerProtocol?
            if let protoText {
                proto = ListenerProtocol(rawValue: protoText)
                if proto == nil {
                    diag.add(file, section.keyPath("protocol"), "unknown protocol \"\(protoText)\" (https, http)")
                }
            }

            var httpsPort: UInt16 = 443
            if let p = httpsPortValue {
                if proto == .https {
                    diag.add(file, section.keyPath("https_port"), "only valid for http listeners")
                } else if (1 ... 65535).contains(p) {
                    httpsPort = UInt16(p)
                } else {
                    diag.add(file, section.keyPath("https_port"), "port must be 1-65535, got \(p)")
                }
            }

            var fallback: TLSProfileName?
            if let fallbackText {
                if proto == .http {
                    diag.add(file, section.keyPath("sni_fallback_profile"), "only valid for https listeners")
                } else if let p = TLSProfileName(rawValue: fallbackText) {
                    fallback = p
                } else {
                    diag.add(file, section.keyPath("sni_fallback_profile"), "unknown profile \"\(fallbackText)\" (\(knownProfiles))")
                }
            }

            if let a = parsedAddress, let proto {
                listeners.append(ListenerConfig(host: a.host, port: a.port, proto: proto, httpsPort: httpsPort,
                                                sniFallbackProfile: fallback, proxyProtocol: proxyProtocol))
            }
        }
        return listeners
    }

    static func parseTimeouts(_ main: TOMLSection, _ diag: inout Diagnostics) -> TimeoutSettings {
        var timeouts = TimeoutSettings()
        guard let section = main.section("timeouts", &diag) else { return timeouts }
        let fields: [(String, WritableKeyPath<TimeoutSettings, Double>)] = [
            ("handshake", \.handshake), ("request_header", \.requestHeader), ("idle", \.idle),
            ("backend_connect", \.backendConnect), ("backend_response", \.backendResponse),
            ("drain", \.drain), ("stop_grace", \.stopGrace),
        ]
        section.rejectUnknownKeys(allowed: Set(fields.map(\.0)), &diag)
        for (key, field) in fields {
            guard let seconds = section.number(key, &diag) else { continue }
            // stop_grace alone may be 0 (its default: no grace).
            if !(seconds > 0 || (key == "stop_grace" && seconds == 0)) || !seconds.isFinite {
                diag.add(main.file, section.keyPath(key), "must be a positive number of seconds, got \(seconds)")
            } else if seconds > maxTimeoutSeconds {
                diag.add(main.file, section.keyPath(key), "must be at most \(Int(maxTimeoutSeconds)) seconds, got \(seconds)")
            } else {
                timeouts[keyPath: field] = seconds
            }
        }
        return timeouts
    }

    static func parseLimits(_ main: TOMLSection, _ diag: inout Diagnostics) -> LimitSettings {
        var limits = LimitSettings()
        guard let section = main.section("limits", &diag) else { return limits }
        let fields: [(String, WritableKeyPath<LimitSettings, Int>)] = [
            ("max_request_line", \.maxRequestLineBytes), ("max_header_bytes", \.maxHeaderBytes),
            ("max_header_count", \.maxHeaderCount), ("max_connections", \.maxConnections),
            ("max_connections_per_client", \.maxConnectionsPerClient),
        ]
        section.rejectUnknownKeys(allowed: Set(fields.map(\.0)), &diag)
        for (key, field) in fields {
            guard let value = section.int(key, &diag) else { continue }
            // 0 turns the per-client cap off; every other limit must be positive.
            let minimum = key == "max_connections_per_client" ? 0 : 1
            // Upper bound keeps size arithmetic in the parser/proxy far from overflow.
            if value >= minimum && value <= Int(Int32.max) {
                limits[keyPath: field] = value
            } else {
                diag.add(main.file, section.keyPath(key), "must be between \(minimum) and \(Int32.max), got \(value)")
            }
        }
        return limits
    }

    /// `[acme]`; nil when absent or invalid (errors recorded). The storage
    /// directory is created here (0700) when missing, so `check` and every
    /// reload prove it usable before anything depends on it.
    static func parseACME(_ main: TOMLSection, listeners: [ListenerConfig], _ diag: inout Diagnostics) -> ACMESettings? {
        guard let section = main.section("acme", &diag) else { return nil }
        let file = main.file
        let before = diag.errors.count
        section.rejectUnknownKeys(allowed: acmeKeys, &diag)

        var directory: String?
        if let raw = section.string("directory", required: true, &diag) {
            switch Syntax.acmeDirectory(raw) {
            case .success(let url): directory = url
            case .failure(let m): diag.add(file, "acme.directory", m.text)
            }
        }

        var contact: [String] = []
        for raw in section.stringOrArray("contact", &diag) ?? [] {
            switch Syntax.acmeContact(raw) {
            case .success(let c): contact.append(c)
            case .failure(let m): diag.add(file, "acme.contact", m.text)
            }
        }

        /// A path key, relative to this file, that `check` accepts; nil (and
        /// an error naming the key) otherwise.
        func path(_ key: String, required: Bool, _ check: (String) -> Result<Void, Message>) -> String? {
            guard let raw = section.string(key, required: required, &diag) else { return nil }
            guard !raw.isEmpty else {
                diag.add(file, "acme.\(key)", "must not be empty")
                return nil
            }
            let path = FileSystem.absolute(raw, relativeTo: FileSystem.directory(of: file))
            switch check(path) {
            case .success: return path
            case .failure(let m):
                diag.add(file, "acme.\(key)", "\"\(path)\": \(m.text)")
                return nil
            }
        }
        let storage = path("storage", required: true, FileSystem.ensureWritableDirectory)
        let trust = path("trust", required: false, FileSystem.readableFile)

        var challenges = ACMEChallengeType.allCases
        if let raw = section.stringArray("challenges", &diag) {
            let known = ACMEChallengeType.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            var parsed: [ACMEChallengeType] = []
            for entry in raw {
                if let c = ACMEChallengeType(rawValue: entry) {
                    if parsed.contains(c) {
                        diag.add(file, "acme.challenges", "\"\(entry)\" is listed twice")
                    } else {
                        parsed.append(c)
                    }
                } else {
                    diag.add(file, "acme.challenges", "unknown challenge \"\(entry)\" (\(known))")
                }
            }
            if raw.isEmpty {
                diag.add(file, "acme.challenges", "must list at least one of \(known)")
            } else if diag.errors.count == before {
                challenges = parsed
                // The CA connects to port 443 for tls-alpn-01 (RFC 8737 §3) and to
                // port 80 for http-01 (RFC 8555 §8.3): one of them must be served.
                if !listeners.isEmpty, !challenges.contains(where: { c in listeners.contains { $0.proto == c.listener } }) {
                    let need = challenges.map { "\($0.rawValue) needs an \($0.listener.rawValue) listener" }.joined(separator: ", ")
                    diag.add(file, "acme.challenges", "no listener can answer these challenges (\(need))")
                }
            }
        }

        guard diag.errors.count == before, let directory, let storage else { return nil }
        var ordersPer3h = ACMESettings.letsEncryptOrdersPer3h
        if let n = section.int("orders_per_3h", &diag) {
            if n >= 1 && n <= 1_000_000 {
                ordersPer3h = n
            } else {
                diag.add(file, "acme.orders_per_3h", "must be between 1 and 1000000, got \(n)")
            }
        }
        return ACMESettings(directory: directory, contact: contact, storage: storage, trust: trust, challenges: challenges,
                            ordersPer3h: ordersPer3h)
    }

    static func needsACMETable(_ mainFile: String) -> String {
        "needs an [acme] table in \(mainFile) (directory and storage)"
    }

    // MARK: - Domain files

    /// An unchanged file's domain from the previous snapshot; its names are
    /// still checked against the other files (one of those may have changed).
    static func reuse(_ domain: DomainConfig, id: Int, owners: inout [String: String], _ diag: inout Diagnostics) -> DomainConfig? {
        var ok = true
        for name in domain.names {
            if let other = owners[name] {
                diag.add(domain.file, "names", "\"\(name)\" is already configured in \(other)")
                ok = false
            } else {
                owners[name] = domain.file
            }
        }
        guard ok else { return nil }
        var copy = domain
        copy.id = id
        return copy
    }

    /// Returns nil when the file has any error (already recorded). `owners` maps every
    /// name declared so far to its file, including names from files that failed, so a
    /// duplicate is reported even when the other file also has unrelated errors.
    /// `mainWithoutACME`: the main file, when it has no [acme] table.
    static func parseDomain(
        _ file: String, id: Int, owners: inout [String: String], mainWithoutACME: String? = nil, _ diag: inout Diagnostics
    ) -> DomainConfig? {
        let before = diag.errors.count
        guard let table = parse(file, &diag) else { return nil }
        // TOMLKit 0.6.0 never frees a parsed document (TOMLTable has no
        // deinit); clear() at least destroys its nodes, which are most of it.
        defer { table.clear() }
        let section = TOMLSection(table: table, file: file, path: "")
        section.rejectUnknownKeys(allowed: domainKeys, &diag)

        let acme = section.bool("acme", &diag) ?? false
        if acme, let mainFile = mainWithoutACME { diag.add(file, "acme", needsACMETable(mainFile)) }
        var names: [String] = []
        if let raw = section.stringArray("names", required: true, &diag) {
            if raw.isEmpty { diag.add(file, "names", "must list at least one name") }
            var local = Set<String>()
            for entry in raw {
                switch Syntax.normalizeName(entry, allowWildcard: true) {
                case .failure(let m):
                    diag.add(file, "names", m.text)
                case .success(let name):
                    if !local.insert(name).inserted {
                        diag.add(file, "names", "\"\(name)\" is listed twice")
                    } else if acme, name.hasPrefix("*.") {
                        // http-01 and tls-alpn-01 prove control of one host name;
                        // CAs issue wildcards only after dns-01.
                        diag.add(file, "names", "\"\(name)\" is a wildcard, which acme = true cannot obtain (http-01 and tls-alpn-01 cannot prove one); list the host names")
                    } else if let other = owners[name] {
                        diag.add(file, "names", "\"\(name)\" is already configured in \(other)")
                    } else {
                        owners[name] = file
                        names.append(name)
                    }
                }
            }
        }

        var backend: Backend?
        if let raw = section.string("backend", required: true, &diag) {
            switch Syntax.backend(raw) {
            case .success(let b): backend = b
            case .failure(let m): diag.add(file, "backend", m.text)
            }
        }

        let directory = FileSystem.directory(of: file)
        /// A path or an array of paths (an ECDSA and an RSA certificate, say).
        func paths(_ key: String) -> [String]? {
            guard let raw = section.stringOrArray(key, required: true, &diag) else { return nil }
            guard !raw.isEmpty else { diag.add(file, key, "must name at least one file"); return nil }
            guard !raw.contains(where: \.isEmpty) else { diag.add(file, key, "must not be empty"); return nil }
            return raw.map { FileSystem.absolute($0, relativeTo: directory) }
        }
        var pairs: [CertificatePair]?
        if acme {
            // The certificate is Gatehouse's to obtain; a file named as well
            // would leave it unclear which one is served.
            for key in ["certificate", "key"] where section.table[key] != nil {
                diag.add(file, key, "not allowed with acme = true (Gatehouse obtains the certificate and its key)")
            }
            pairs = []
        } else if let certificates = paths("certificate"), let keys = paths("key") {
            if certificates.count == keys.count {
                pairs = zip(certificates, keys).map { CertificatePair(certificate: $0, key: $1) }
            } else {
                diag.add(file, "key", "lists \(keys.count) file(s) for \(certificates.count) certificate(s); they pair up by position")
            }
        }

        var profile = TLSProfileName.modern
        if let raw = section.string("tls_profile", &diag) {
            if let p = TLSProfileName(rawValue: raw) {
                profile = p
            } else {
                diag.add(file, "tls_profile", "unknown profile \"\(raw)\" (\(knownProfiles))")
            }
        }

        let redirectHTTP = section.bool("redirect_http", &diag) ?? true

        var maxAge = 31_536_000
        if let value = section.int("hsts_max_age", &diag) {
            if value >= 0 { maxAge = value } else { diag.add(file, "hsts_max_age", "must be >= 0 (0 disables HSTS), got \(value)") }
        }
        let includeSubdomains = section.bool("hsts_include_subdomains", &diag) ?? false
        let preload = section.bool("hsts_preload", &diag) ?? false
        if preload {
            if !includeSubdomains {
                diag.add(file, "hsts_preload", "requires hsts_include_subdomains = true")
            }
            if maxAge < preloadMinimumMaxAge {
                diag.add(file, "hsts_preload", "requires hsts_max_age >= \(preloadMinimumMaxAge), got \(maxAge)")
            }
        }

        var maxBody: UInt64?
        if let value = section.int("max_body_bytes", &diag) {
            if value > 0 { maxBody = UInt64(value) } else { diag.add(file, "max_body_bytes", "must be > 0, got \(value)") }
        }

        let acceptAnyHost = section.bool("accept_any_host", &diag) ?? false
        let upgradeInsecure = section.bool("upgrade_insecure_requests", &diag) ?? false
        let http2 = section.bool("http2", &diag) ?? true

        guard diag.errors.count == before, !names.isEmpty, let backend, let pairs else {
            return nil
        }
        return DomainConfig(
            id: id, file: file, names: names, backend: backend, certificates: pairs, acme: acme,
            tlsProfile: profile, redirectHTTP: redirectHTTP, hstsMaxAge: maxAge,
            hstsIncludeSubdomains: includeSubdomains, hstsPreload: preload, maxBodyBytes: maxBody,
            acceptAnyHost: acceptAnyHost, upgradeInsecureRequests: upgradeInsecure, http2: http2)
    }

    // MARK: - Helpers

    /// Reads and parses one file; nil (with the error recorded) on any failure.
    static func parse(_ file: String, _ diag: inout Diagnostics) -> TOMLTable? {
        let bytes: [UInt8]
        switch FileSystem.readFile(file) {
        case .success(let b): bytes = b
        case .failure(let m):
            diag.add(file, nil, m.text)
            return nil
        }
        // toml++ takes a C string, so a NUL would silently truncate the document.
        if let nul = bytes.firstIndex(of: 0) {
            let line = bytes[..<nul].reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
            diag.errors.append(ConfigError(file: file, line: line, message: "NUL byte in file"))
            return nil
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            diag.add(file, nil, "not valid UTF-8")
            return nil
        }
        do {
            return try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            diag.errors.append(ConfigError(
                file: file, line: error.source.begin.line, column: error.source.begin.column,
                message: error.description))
            return nil
        } catch {
            diag.add(file, nil, "\(error)")
            return nil
        }
    }

    /// Same normalization the name index applies to queries.
    static func normalizeQuery(_ name: String) -> String {
        var bytes = Array(name.utf8).map(NameIndex.lower)
        if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }
}
