/// One problem in one file. Semantic errors carry the dotted key path
/// ("listener[0].address", "timeouts.idle") because TOMLKit values carry no positions;
/// syntax errors carry the parser's line and column instead.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String
    public let key: String?
    public let line: Int?
    /// Only set for TOML syntax errors (API addition alongside `line`).
    public let column: Int?
    public let message: String

    public init(file: String, key: String? = nil, line: Int? = nil, column: Int? = nil, message: String) {
        self.file = file
        self.key = key
        self.line = line
        self.column = column
        self.message = message
    }

    /// Compiler-style so editors and grep can jump to it:
    /// "FILE:LINE:COLUMN: msg", "FILE: key: msg" or "FILE: msg".
    public var description: String {
        var out = file
        if let line {
            out += ":\(line)"
            if let column { out += ":\(column)" }
        }
        if let key { out += ": \(key)" }
        return out + ": " + message
    }
}

/// Every problem found in one load; the loader checks all files before throwing so an
/// operator fixes everything in one pass instead of one error per restart.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public let errors: [ConfigError]

    public init(_ errors: [ConfigError]) {
        self.errors = errors
    }

    public init(errors: [ConfigError]) {
        self.errors = errors
    }

    /// One line per error.
    public var description: String {
        errors.map(\.description).joined(separator: "\n")
    }
}
