import ArgumentParser
import BerthAPI
import BerthModel
import FoundationEssentials
import GRPCCore
import SwiftProtobuf

/// `berth controller …`: the cluster's controllers and their store.
struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller", abstract: "Show the cluster's controllers: which one leads, since when, in which term.",
        subcommands: [ControllerList.self])
}

/// A controller as `controller ls --format json` shows it.
struct ControllerView: Encodable {
    var address: String
    var leader: Bool
    var term: Int64
    var since: Date?
    var answered: Bool
}

struct ControllerList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the controllers, the leader first, and the store's members.", aliases: ["list"])
    @OptionGroup var options: ControllerOptions
    @Option(help: "Output format: json, or table (the default).") var format: String?

    func run() async throws {
        let format = try OutputFormat(format)
        let reply = try await options.withController { grpc in
            try await Berth_Controller_V1_Controllers.Client(wrapping: grpc).list(.init())
        }
        let views = reply.controllers.map {
            ControllerView(address: $0.address, leader: $0.leader, term: $0.term, since: $0.hasSince ? $0.since.date : nil, answered: $0.answered)
        }
        switch format {
        case .json: try Console.json(views)
        case .human:
            let rows = views.map { view -> [String] in
                [
                    view.address + (view.answered ? " *" : ""), view.leader ? "leader" : "follower", view.leader ? String(view.term) : "",
                    view.since.map { Human.ago($0) } ?? "",
                ]
            }
            Console.print(Table(rows: [["ADDRESS", "ROLE", "TERM", "LEADING SINCE"]] + rows).text)
            Console.print("")
            Console.print("store: \(reply.store)" + (reply.storeHealthy ? "" : " — no answer: the store has no quorum, and what is shown may be stale"))
            if !reply.storeMembers.isEmpty {
                let members = reply.storeMembers.map { member -> [String] in
                    [member.endpoint, member.healthy ? (member.leader ? "healthy, raft leader" : "healthy") : "unhealthy: \(member.error)",
                     member.healthy ? String(member.raftTerm) : ""]
                }
                Console.print(Table(rows: [["STORE MEMBER", "STATE", "RAFT TERM"]] + members).text)
            }
        }
    }
}
