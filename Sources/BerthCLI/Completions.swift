import ArgumentParser
import BerthAPI
import BerthLinux
import BerthModel
import BerthTransport
import FoundationEssentials
import GRPCCore
import SwiftProtobuf

/// Shell completion of the names the agent has: containers, images,
/// networks, volumes (asked of the agent at $BERTH_HOST, or -H/--host as
/// typed on the line being completed). Nothing when it cannot be asked.
enum NameCompletion {
    static let containers = CompletionKind.custom { words, _, _ async in await names(words) { grpc in
        try await Berth_Agent_V1_Containers.Client(wrapping: grpc).list(.with { $0.all = true }).containers.map(\.name)
    } }
    static let images = CompletionKind.custom { words, _, _ async in await names(words) { grpc in
        try await Berth_Agent_V1_Images.Client(wrapping: grpc).list(.init()).images.flatMap { image in
            image.names.compactMap { try? ImageReference(parsing: $0).familiar }
        }
    } }
    static let networks = CompletionKind.custom { words, _, _ async in await names(words) { grpc in
        try await Berth_Agent_V1_Networks.Client(wrapping: grpc).list(.init()).networks.map(\.name)
    } }
    static let volumes = CompletionKind.custom { words, _, _ async in await names(words) { grpc in
        try await Berth_Agent_V1_Volumes.Client(wrapping: grpc).list(.init()).volumes.map(\.name)
    } }

    private static func names(
        _ words: [String], _ list: @escaping @Sendable (GRPCClient<NGHTTP2ClientTransport>) async throws -> [String]
    ) async -> [String] {
        let host = Array(zip(words, words.dropFirst())).last { $0.0 == "-H" || $0.0 == "--host" }?.1
        return ((try? await AgentConnection(host: host, tlsDir: nil).withClient(list)) ?? []).sorted()
    }
}

/// `berth completion bash|zsh|fish`: the shell's completion script (docker's
/// `docker completion`), names completed by asking the agent.
struct CompletionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "completion", abstract: "Print the completion script for bash, zsh or fish.",
        discussion: """
            bash:  berth completion bash > /etc/bash_completion.d/berth
            zsh:   berth completion zsh > "${fpath[1]}/_berth"
            fish:  berth completion fish > ~/.config/fish/completions/berth.fish
            """)
    @Argument(help: "bash, zsh or fish.") var shell: String

    func run() throws {
        guard let kind = CompletionShell(rawValue: shell) else { throw BerthError.invalid("completion \"\(shell)\": expected bash, zsh or fish") }
        Console.write(Descriptor.standardOutput, Array(BerthCommand.completionScript(for: kind).utf8))
    }
}
