import ArgumentParser
import BerthAPI
import BerthModel
import FoundationEssentials
import GRPCCore
import SwiftProtobuf

/// `berth events`: the agent's event log, replayed from a revision and then
/// followed, one line per event (docker's layout, with the revision).
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Show events: those after a revision, then new ones as they happen.")

    @OptionGroup var agent: AgentOptions
    @Option(help: "Replay the events after this revision first (0: from the oldest kept). Without it, only new events.")
    var since: UInt64?
    @Option(name: .customLong("filter"), help: "KEY=VALUE, repeatable: type=container|image|…, container=NAME|ID, image=NAME|ID, event=ACTION.")
    var filters: [String] = []
    @Option(help: "Output format: json (one object per line), or the default line per event.")
    var format: String?

    func run() async throws {
        let output = try OutputFormat(format)
        var grouped: [(key: String, values: [String])] = []
        for filter in filters {
            let parts = filter.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw BerthError.invalid("--filter \"\(filter)\": expected KEY=VALUE") }
            if let i = grouped.firstIndex(where: { $0.key == parts[0] }) {
                grouped[i].values.append(parts[1])
            } else {
                grouped.append((parts[0], [parts[1]]))
            }
        }
        let request = Berth_Agent_V1_WatchEventsRequest.with {
            $0.fromRevision = since ?? 0
            $0.liveOnly = since == nil
            $0.filters = grouped.map { group in .with { $0.key = group.key; $0.values = group.values } }
        }
        var unlimited = CallOptions.defaults
        unlimited.timeout = nil
        let options = unlimited
        try await agent.connection().withClient { grpc in
            try await Berth_Agent_V1_Events.Client(wrapping: grpc).watch(request, options: options) { response in
                for try await message in response.messages {
                    let event = try Event(proto: message.event)
                    switch output {
                    case .json: Console.print(try BerthJSON.string(event, pretty: false))
                    case .human: Console.print(Self.line(event))
                    }
                }
            }
        }
    }

    /// `2026-11-29T05:00:00.123456789Z container start 3f2a… (image=busybox, name=web) revision=12`
    static func line(_ event: Event) -> String {
        let attributes = event.attributes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
        return "\(RFC3339.format(event.time)) \(event.type.rawValue) \(event.action) \(event.actorID)"
            + (attributes.isEmpty ? "" : " (\(attributes))") + " revision=\(event.revision)"
    }
}
