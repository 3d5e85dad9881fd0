import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTemplate
import FoundationEssentials
import GRPCCore
import SwiftProtobuf

/// `berth image …`
struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Manage images.",
        subcommands: [ImageImport.self, ImagePull.self, ImageList.self, ImageRemove.self, ImageTag.self, ImageInspect.self, SaveCommand.self, LoadCommand.self, ImagePrune.self])
}

struct ImageImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import an image: a root filesystem (a tar archive or a directory) as a single-layer image, or an OCI layout or docker archive with its images.")

    @OptionGroup var agent: AgentOptions
    @Option(name: .shortAndLong, help: "Set an image setting, as docker import does: CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, STOPSIGNAL, HEALTHCHECK, SHELL (repeatable).")
    var change: [String] = []
    @Argument(help: "A tar archive or a directory on the agent's host.") var source: String
    @Argument(help: "NAME[:TAG]; required for a root filesystem.") var reference: String?

    func run() async throws {
        if let reference { _ = try ImageReference(parsing: reference) }
        let images = try await ImageLoading.load(source, reference: reference, config: try ImageChanges.parse(change), agent: agent)
        for image in images { Console.print(image.id) }
    }
}

/// `berth load`: the images of an OCI layout or a docker archive, as docker load does.
struct LoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load", abstract: "Load images from an OCI layout or a docker archive (docker save output) on the agent's host.")

    @OptionGroup var agent: AgentOptions
    @Option(name: .shortAndLong, help: "The archive or layout directory.") var input: String
    @Flag(name: .shortAndLong, help: "Print nothing.") var quiet = false

    func run() async throws {
        let images = try await ImageLoading.load(input, reference: nil, config: ImageConfig(), agent: agent)
        guard !quiet else { return }
        for image in images {
            if image.names.isEmpty {
                Console.print("Loaded image ID: \(image.id)")
            }
            for name in image.names { Console.print("Loaded image: \((try? ImageReference(parsing: name).familiar) ?? name)") }
        }
    }
}

enum ImageLoading {
    static func load(_ source: String, reference: String?, config: ImageConfig, agent: AgentOptions) async throws -> [Berth_Agent_V1_Image] {
        let path = source.hasPrefix("/") ? source : FileManager.default.currentDirectoryPath + "/" + source
        let response = try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Images.Client(wrapping: grpc).importImage(
                .with {
                    $0.path = path
                    $0.reference = reference ?? ""
                    $0.config = config.proto
                })
        }
        return response.images
    }
}

/// `--change` instructions of docker import.
enum ImageChanges {
    static func parse(_ changes: [String]) throws -> ImageConfig {
        var config = ImageConfig()
        for change in changes {
            let parts = change.split(separator: " ", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw BerthError.invalid("--change \"\(change)\": expected INSTRUCTION VALUE") }
            let value = parts[1]
            func list() -> [String] {
                if value.hasPrefix("["), let data = value.data(using: .utf8), let array = try? JSONDecoder().decode([String].self, from: data) {
                    return array
                }
                return ["/bin/sh", "-c", value]
            }
            switch parts[0].uppercased() {
            case "CMD": config.cmd = list()
            case "ENTRYPOINT": config.entrypoint = list()
            case "ENV":
                // The legacy form "ENV KEY VALUE" means KEY=VALUE.
                if !value.contains("="), let space = value.firstIndex(of: " ") {
                    config.env.append(value[..<space] + "=" + value[value.index(after: space)...])
                } else {
                    config.env.append(value)
                }
            case "WORKDIR": config.workingDir = value
            case "USER": config.user = value
            case "EXPOSE": config.exposedPorts.append(value.contains("/") ? value : value + "/tcp")
            case "STOPSIGNAL": config.stopSignal = value
            case "LABEL":
                let kv = value.split(separator: "=", maxSplits: 1).map(String.init)
                config.labels[kv[0]] = kv.count > 1 ? String(kv[1].drop { $0 == "\"" }.reversed().drop { $0 == "\"" }.reversed()) : ""
            case "VOLUME": config.volumes.append(value)
            case "HEALTHCHECK": config.healthcheck = try HealthCheck(parsingInstruction: value)
            case "SHELL":
                guard value.hasPrefix("["), let data = value.data(using: .utf8), let shell = try? JSONDecoder().decode([String].self, from: data), !shell.isEmpty else {
                    throw BerthError.invalid("--change \"\(change)\": SHELL takes a JSON array, such as [\"/bin/sh\", \"-c\"]")
                }
                config.shell = shell
            default: throw BerthError.invalid("--change \"\(change)\": \(parts[0]) is not an instruction import takes")
            }
        }
        return config
    }
}

struct ImageList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List images.", aliases: ["list"])

    @OptionGroup var agent: AgentOptions
    @Option(help: "A Go template ('table {{.Repository}}\\t{{.ID}}'), json (one object per line), or table (the default).") var format: String?
    @Flag(name: .shortAndLong, help: "Only show image IDs.") var quiet = false
    @Flag(help: "Show digests.") var digests = false
    @Flag(help: "Do not truncate IDs.") var noTrunc = false
    @Flag(name: .shortAndLong, help: "Show all images (Berth keeps no intermediate images: the same list).") var all = false
    @Option(name: .shortAndLong, help: "Filter: dangling=true|false, reference=PATTERN (* matches within a part), label=KEY[=VALUE].") var filter: [String] = []

    func run() async throws {
        let filters = try ImageFilter.parse(filter)
        let images = try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Images.Client(wrapping: grpc).list(.init()).images.map { try Image(proto: $0) }
        }.compactMap { ImageFilter.apply(filters, to: $0) }
        if quiet {
            images.forEach { Console.print(noTrunc ? $0.id : $0.shortID) }
            return
        }
        try DockerRows.images(images, truncate: !noTrunc, digests: digests).print(format)
    }
}

struct ImageRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove images.", aliases: ["remove"])
    @OptionGroup var options: ImageRemoveOptions
    func run() async throws { try await options.run() }
}

/// `berth rmi`, the same as `berth image rm`.
struct RmiCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rmi", abstract: "Remove images (same as image rm).")
    @OptionGroup var options: ImageRemoveOptions
    func run() async throws { try await options.run() }
}

struct ImageRemoveOptions: ParsableArguments {
    @OptionGroup var agent: AgentOptions
    @Flag(name: .shortAndLong, help: "Remove even if a container uses it.") var force = false
    @Argument(completion: NameCompletion.images) var images: [String]

    func run() async throws {
        let force = self.force
        try await EachName.run(images) { image in
            let r = try await agent.connection().withClient { grpc in
                try await Berth_Agent_V1_Images.Client(wrapping: grpc).remove(.with {
                    $0.image = image
                    $0.force = force
                })
            }
            r.untagged.forEach { Console.print("Untagged: \($0)") }
            r.deleted.forEach { Console.print("Deleted: \($0)") }
        }
    }
}

struct ImageTag: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tag", abstract: "Give an image another name.")
    @OptionGroup var agent: AgentOptions
    @Argument(completion: NameCompletion.images) var source: String
    @Argument var target: String

    func run() async throws {
        let (source, target) = (self.source, self.target)
        _ = try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Images.Client(wrapping: grpc).tag(.with {
                $0.image = source
                $0.reference = target
            })
        }
    }
}

struct ImageInspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show images in detail (docker's JSON).")
    @OptionGroup var agent: AgentOptions
    @Option(name: .shortAndLong, help: "A Go template ('{{.Id}}'), or json (one line).") var format: String?
    @Argument(completion: NameCompletion.images) var images: [String]

    func run() async throws {
        try await Inspected.each(images, format: format) { name in
            try await agent.connection().withClient { try await Inspected.image(name, $0) }
        }
    }
}

/// `berth save`: images as an OCI image layout archive, to a file or stdout.
struct SaveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "save", abstract: "Save images to an OCI image layout archive (a tar), written to a file or standard output.")

    @OptionGroup var agent: AgentOptions
    @Option(name: .shortAndLong, help: "Write to this file instead of standard output.") var output: String?
    @Argument(help: "Images, by name or ID.", completion: NameCompletion.images) var images: [String]

    func run() async throws {
        if output == nil && Descriptor.standardOutput.isTerminal {
            throw BerthError.invalid("refusing to write an archive to a terminal; use -o FILE or redirect standard output")
        }
        let temporary = output.map { $0 + ".berth-partial" }
        let fd = try temporary.map { path -> Descriptor in
            do { return try Descriptor.open(path, [.writeOnly, .create, .truncate]) } catch {
                throw BerthError(.invalidArgument, "cannot write \(path): \(error)")
            }
        } ?? Descriptor.standardOutput
        let images = self.images
        do {
            try await agent.connection().withClient { grpc in
                var options = CallOptions.defaults
                options.timeout = nil
                try await Berth_Agent_V1_Images.Client(wrapping: grpc).save(.with { $0.images = images }, options: options) { response in
                    for try await message in response.messages {
                        do { try message.data.withUnsafeBytes { try fd.write($0) } } catch {
                            throw BerthError(.internal, "cannot write the archive: \(error)")
                        }
                    }
                }
            }
        } catch {
            if let temporary {
                fd.close()
                try? FileIO.removeFile(temporary)
            }
            throw error
        }
        if let temporary, let output {
            do {
                try fd.sync()
                fd.close()
                try FileIO.rename(temporary, to: output)
            } catch {
                try? FileIO.removeFile(temporary)
                throw BerthError(.internal, "cannot write \(output): \(error)")
            }
        }
    }
}

/// `images --filter`, docker's: dangling, reference (a pattern on the
/// familiar name, `*` within a part), label.
enum ImageFilter {
    case dangling(Bool)
    case reference(String)
    /// `KEY` or `KEY=VALUE`, as the model's label filters take it.
    case label(String)

    /// - Throws: `BerthError.invalidArgument` for a filter images does not take.
    static func parse(_ items: [String]) throws -> [ImageFilter] {
        try items.map { item in
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw BerthError.invalid("filter \"\(item)\": expected KEY=VALUE") }
            switch kv[0] {
            case "dangling":
                guard let value = Bool(kv[1]) else { throw BerthError.invalid("filter \"\(item)\": dangling is true or false") }
                return .dangling(value)
            case "reference": return .reference(kv[1])
            case "label": return .label(kv[1])
            default: throw BerthError.invalid("filter \"\(item)\": images takes dangling, reference and label")
            }
        }
    }

    /// The image as the filters leave it: nil when one refuses it; with a
    /// reference filter, only its names that match (one row each).
    static func apply(_ filters: [ImageFilter], to image: Image) -> Image? {
        var image = image
        for filter in filters {
            switch filter {
            case .dangling(let wanted): guard image.names.isEmpty == wanted else { return nil }
            case .reference(let pattern):
                image.names = image.names.filter { name in
                    let familiar = (try? ImageReference(parsing: name))?.familiar ?? name
                    let repository = familiar.split(separator: ":").first.map(String.init) ?? familiar
                    return glob(pattern, familiar) || glob(pattern, repository)
                }
                guard !image.names.isEmpty else { return nil }
            case .label(let filter): guard image.config.labels.matches(labelFilter: filter) else { return nil }
            }
        }
        return image
    }

    /// `*` matches any run of characters but `/`; `?` one character.
    static func glob(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern)
        let t = Array(text)
        func match(_ i: Int, _ j: Int) -> Bool {
            if i == p.count { return j == t.count }
            switch p[i] {
            case "*":
                var k = j
                while true {
                    if match(i + 1, k) { return true }
                    if k == t.count || t[k] == "/" { return false }
                    k += 1
                }
            case "?": return j < t.count && match(i + 1, j + 1)
            default: return j < t.count && t[j] == p[i] && match(i + 1, j + 1)
            }
        }
        return match(0, 0)
    }
}
