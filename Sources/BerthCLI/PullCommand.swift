import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import FoundationEssentials
import GRPCCore
import SwiftProtobuf

/// `berth pull`: an image from its registry, with a progress line per layer.
struct PullCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pull", abstract: "Download an image from a registry.")

    @OptionGroup var options: PullOptions

    func run() async throws {
        try await Self.pull(options.image, platform: options.platform, quiet: options.quiet, agent: options.agent)
    }

    /// Pulls with the credentials `berth login` stored for the registry,
    /// drawing progress on `output` (stderr when a container's output is to follow).
    static func pull(_ image: String, platform: String?, quiet: Bool, agent: AgentOptions, output: Descriptor = .standardOutput) async throws {
        let reference = try ImageReference(parsing: image)
        let credentials = try CredentialStore().credentials(for: reference.registry)
        try await agent.connection().withClient { grpc in
            let request = Berth_Agent_V1_PullImageRequest.with {
                $0.reference = image
                $0.platform = platform ?? ""
                if let credentials { $0.credentials = credentials }
            }
            var options = CallOptions.defaults
            options.timeout = nil
            try await Berth_Agent_V1_Images.Client(wrapping: grpc).pull(request, options: options) { response in
                var board = PullBoard(output: output, live: !quiet && output.isTerminal)
                for try await message in response.messages {
                    switch message.event {
                    case .status(let text)?:
                        if !quiet { board.status(text) }
                    case .progress(let progress)?:
                        if !quiet { board.update(progress) }
                    case .image?:
                        board.finish()
                    case nil:
                        break
                    }
                }
            }
        }
        if output == Descriptor.standardOutput { Console.print(reference.canonical) }
    }

    /// Runs `create` (which names `image`), pulling the image first as
    /// `--pull` says: `always`; `missing`, when the agent has no such image;
    /// `never`.
    static func creating<R>(
        _ image: String, policy: String, platform: String?, agent: AgentOptions, _ create: () async throws -> R
    ) async throws -> R {
        switch policy {
        case "always":
            try await pull(image, platform: platform, quiet: false, agent: agent, output: Descriptor.standardError)
            return try await create()
        case "never":
            return try await create()
        case "missing":
            do {
                return try await create()
            } catch where isMissingImage(error) {
                Console.error("Unable to find image '\(image)' locally")
                try await pull(image, platform: platform, quiet: false, agent: agent, output: Descriptor.standardError)
                return try await create()
            }
        default:
            throw BerthError.invalid("--pull \"\(policy)\": expected missing, always or never")
        }
    }

    private static func isMissingImage(_ error: any Error) -> Bool {
        let domain = (error as? BerthError) ?? (error as? RPCError).map(BerthError.init)
        guard let domain else { return false }
        return domain.code == .notFound && domain.message.hasPrefix("no such image: ")
    }
}

/// Draws the layers of a pull as docker does: one line per layer, redrawn
/// in place on a terminal, a line per change of phase otherwise.
struct PullBoard {
    let output: Descriptor
    let live: Bool
    private var order: [String] = []
    private var lines: [String: String] = [:]
    private var drawn = 0

    init(output: Descriptor, live: Bool) {
        self.output = output
        self.live = live
    }

    private func say(_ text: String) { Console.write(output, Array((text + "\n").utf8)) }

    mutating func status(_ text: String) {
        clear()
        say(text)
        redraw()
    }

    mutating func update(_ p: Berth_Agent_V1_LayerProgress) {
        let id = String(p.digest.dropFirst(7).prefix(12))
        if lines[id] == nil { order.append(id) }
        let text: String
        switch p.phase {
        case .waiting: text = "Waiting"
        case .downloading: text = "Downloading " + Self.bar(p.currentBytes, p.totalBytes)
        case .verifying: text = "Verifying Checksum"
        case .extracting: text = "Extracting"
        case .done: text = "Pull complete"
        case .alreadyExists: text = "Already exists"
        default: text = ""
        }
        let line = "\(id): \(text)"
        let changed = lines[id].map { !Self.samePhase($0, line) } ?? true
        lines[id] = line
        if live {
            clear()
            redraw()
        } else if changed {
            say(p.phase == .downloading ? "\(id): Downloading" : line)
        }
    }

    mutating func finish() {
        if live {
            clear()
            redraw()
            drawn = 0
        }
    }

    private static func samePhase(_ a: String, _ b: String) -> Bool {
        a.split(separator: " ").prefix(2) == b.split(separator: " ").prefix(2)
    }

    static func bar(_ current: Int64, _ total: Int64) -> String {
        guard total > 0 else { return Human.size(current) }
        let width = 40
        let filled = Int(Double(width) * min(1, Double(current) / Double(total)))
        let arrow = filled < width ? ">" : ""
        let bar = String(repeating: "=", count: max(0, filled - arrow.count)) + arrow + String(repeating: " ", count: width - filled)
        return "[\(bar)]  \(Human.size(current))/\(Human.size(total))"
    }

    private mutating func clear() {
        guard live, drawn > 0 else { return }
        // Up to the first layer line, and clear to the end of the screen.
        Console.write(output, Array("\u{1b}[\(drawn)A\r\u{1b}[J".utf8))
        drawn = 0
    }

    private mutating func redraw() {
        guard live else { return }
        for id in order { say(lines[id] ?? id) }
        drawn = order.count
    }
}

/// `berth login`: checks credentials with the registry (through the agent)
/// and keeps them for pulls.
struct LoginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login", abstract: "Log in to a registry; pulls from it use the credentials from then on.")

    @OptionGroup var agent: AgentOptions
    @Option(name: .shortAndLong, help: "User name.") var username: String?
    @Option(name: .shortAndLong, help: "Password (prefer --password-stdin).") var password: String?
    @Flag(help: "Read the password from standard input.") var passwordStdin = false
    @Argument(help: "The registry (HOST[:PORT]); docker.io when left out.") var server: String?

    func run() async throws {
        let registry = CredentialStore.registryKey(server)
        guard let username, !username.isEmpty else { throw BerthError.invalid("login needs a user name: -u NAME") }
        var secret = password ?? ""
        if passwordStdin {
            guard password == nil else { throw BerthError.invalid("--password and --password-stdin cannot be used together") }
            let bytes = (try? Descriptor.standardInput.readToEnd(limit: 1 << 20)) ?? []
            secret = String(decoding: bytes, as: UTF8.self)
            while secret.hasSuffix("\n") || secret.hasSuffix("\r") { secret.removeLast() }
        }
        guard !secret.isEmpty else { throw BerthError.invalid("login needs a password: --password-stdin or -p") }
        if password != nil { Console.error("WARNING! Using --password via the CLI is insecure. Use --password-stdin.") }
        let credentials = Berth_Agent_V1_Credentials.with {
            $0.username = username
            $0.password = secret
        }
        try await agent.connection().withClient { grpc in
            _ = try await Berth_Agent_V1_Images.Client(wrapping: grpc).checkLogin(.with {
                $0.registry = registry
                $0.credentials = credentials
            })
        }
        try CredentialStore().store(credentials, for: registry)
        Console.print("Login Succeeded")
    }
}

/// `berth logout`: forgets a registry's credentials.
struct LogoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logout", abstract: "Forget the credentials of a registry.")

    @Argument(help: "The registry (HOST[:PORT]); docker.io when left out.") var server: String?

    func run() async throws {
        let registry = CredentialStore.registryKey(server)
        if try CredentialStore().remove(registry) {
            Console.print("Removing login credentials for \(registry)")
        } else {
            Console.print("Not logged in to \(registry)")
        }
    }
}

/// Registry credentials in docker's config.json format, in
/// `$BERTH_CONFIG/config.json` or `~/.berth/config.json`, mode 0600.
struct CredentialStore {
    let path: String

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let directory = environment["BERTH_CONFIG"].flatMap { $0.isEmpty ? nil : $0 } ?? ((environment["HOME"] ?? "/root") + "/.berth")
        path = directory + "/config.json"
    }

    /// The key a registry is kept under: its host[:port], docker.io for Docker Hub.
    static func registryKey(_ server: String?) -> String {
        guard var text = server, !text.isEmpty else { return ImageReference.defaultRegistry }
        for prefix in ["https://", "http://"] where text.hasPrefix(prefix) { text = String(text.dropFirst(prefix.count)) }
        text = String(text.prefix { $0 != "/" })
        return ["index.docker.io", "registry-1.docker.io"].contains(text) ? ImageReference.defaultRegistry : text
    }

    private struct File: Codable {
        struct Entry: Codable { var auth: String }
        var auths: [String: Entry] = [:]
    }

    private func load() throws -> File {
        guard let data = FileManager.default.contents(atPath: path) else { return File() }
        do {
            return try JSONDecoder().decode(File.self, from: data)
        } catch {
            throw BerthError.invalid("\(path) does not parse: \(error)")
        }
    }

    private func save(_ file: File) throws {
        let directory = String(path[..<path.lastIndex(of: "/")!])
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(file)
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]),
            (try? FileIO.rename(temporary, to: path)) != nil
        else { throw BerthError(.internal, "cannot write \(path)") }
    }

    func credentials(for registry: String) throws -> Berth_Agent_V1_Credentials? {
        guard let entry = try load().auths[registry],
            let decoded = Data(base64Encoded: entry.auth).map({ String(decoding: $0, as: UTF8.self) }),
            let colon = decoded.firstIndex(of: ":")
        else { return nil }
        return .with {
            $0.username = String(decoded[..<colon])
            $0.password = String(decoded[decoded.index(after: colon)...])
        }
    }

    func store(_ credentials: Berth_Agent_V1_Credentials, for registry: String) throws {
        var file = try load()
        file.auths[registry] = .init(auth: Data("\(credentials.username):\(credentials.password)".utf8).base64EncodedString())
        try save(file)
    }

    func remove(_ registry: String) throws -> Bool {
        var file = try load()
        guard file.auths.removeValue(forKey: registry) != nil else { return false }
        try save(file)
        return true
    }
}

/// `berth image pull`, the same as `berth pull`.
struct ImagePull: AsyncParsableCommand {
    static let configuration = PullCommand.configuration
    @OptionGroup var options: PullOptions

    func run() async throws {
        try await PullCommand.pull(options.image, platform: options.platform, quiet: options.quiet, agent: options.agent)
    }
}

struct PullOptions: ParsableArguments {
    @OptionGroup var agent: AgentOptions
    @Option(help: "The platform to pull from a multi-platform image (OS/ARCH[/VARIANT]); the agent's own by default.")
    var platform: String?
    @Flag(name: .shortAndLong, help: "Print only the image's name when done.") var quiet = false
    @Argument(help: "NAME[:TAG|@DIGEST]") var image: String
}
