import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import GatehouseConfig
import GatehouseLog
import GatehouseServer
import GatehouseTLS

@main
struct Gatehouse: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gatehouse",
        abstract: "A TLS-terminating reverse proxy for many domains.",
        version: GatehouseVersion.string,
        subcommands: [Run.self, Check.self, ACME.self]
    )
}

enum GatehouseVersion {
    static let string = "0.1.0"
}

struct ConfigOption: ParsableArguments {
    @Option(name: [.customShort("c"), .customLong("config")], help: "Main configuration file.")
    var path: String = "/etc/gatehouse/gatehouse.toml"

    /// The snapshot, or every error on standard error and exit 1.
    func load() throws -> ConfigSnapshot {
        do {
            return try ConfigLoader.load(path: path)
        } catch {
            for e in error.errors { printError(e.description) }
            throw ExitCode(1)
        }
    }
}

func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve in the foreground.")
    @OptionGroup var config: ConfigOption

    func run() throws {
        let server = Server(configPath: config.path)
        do {
            try server.run()
        } catch {
            for line in error.description.split(separator: "\n") { Log.error(String(line)) }
            throw ExitCode(1)
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate the configuration, every certificate and key; exit 1 on any problem.")
    @OptionGroup var config: ConfigOption

    func run() throws {
        let snapshot = try config.load()
        let (credentials, failures) = CredentialSet.load(snapshot)
        for f in failures { printError(f.description) }
        var failed = !failures.isEmpty
        do {
            let keys = try TicketKeys.load(snapshot.tls)
            _ = try TLSServer(snapshot: snapshot, store: CredentialStore(snapshot: snapshot), ticketKeys: keys)
        } catch let error as TicketKeyError {
            printError(error.description)
            failed = true
        } catch {
            printError("\(snapshot.mainFile): tls: \(error)")
            failed = true
        }
        guard !failed else { throw ExitCode(1) }
        for w in CredentialSet.expiryWarnings(snapshot, credentials) { printError("warning: \(w.text)") }
        print("OK, \(snapshot.domains.count) domain\(snapshot.domains.count == 1 ? "" : "s")")
    }
}

struct ACME: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "acme", abstract: "Automatic certificates (ACME).", subcommands: [Status.self])

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One line per acme = true domain: names, state, expiry, next renewal, last error (read from storage).")
        @OptionGroup var config: ConfigOption

        func run() throws {
            let snapshot = try config.load()
            guard snapshot.acme != nil else {
                printError("\(snapshot.mainFile): no [acme] table: Gatehouse obtains no certificates")
                throw ExitCode(1)
            }
            print(ACMEStatusReport.header)
            for line in ACMEStatusReport.lines(snapshot) { print(line) }
        }
    }
}
