import BerthAPI
import BerthModel
public import GRPCCore
import SwiftProtobuf

/// `berth.controller.v1.Controllers`: which controller leads, as the
/// store says; any controller answers, leader or not.
public struct ControllersService: Berth_Controller_V1_Controllers.SimpleServiceProtocol {
    let seat: ControllerSeat
    let candidacy: any Candidacy
    let address: String
    let store: String

    init(seat: ControllerSeat, candidacy: any Candidacy, address: String, store: String) {
        self.seat = seat
        self.candidacy = candidacy
        self.address = address
        self.store = store
    }

    public func list(request: Berth_Controller_V1_ListControllersRequest, context: ServerContext) async throws
        -> Berth_Controller_V1_ListControllersResponse
    {
        let term = seat.term
        var healthy = true
        var candidates: [Candidate]
        do {
            candidates = try await candidacy.candidates()
        } catch {
            healthy = false
            candidates = [Candidate(address: address, term: 0)]
        }
        let members = await candidacy.storeMembers()
        return .with { reply in
            reply.store = store
            reply.storeHealthy = healthy
            reply.controllers = candidates.enumerated().map { index, candidate in
                .with {
                    $0.address = candidate.address
                    $0.leader = healthy && index == 0
                    $0.term = healthy && index == 0 ? candidate.term : 0
                    $0.answered = candidate.address == address
                    if let term, candidate.address == address, index == 0 { $0.since = Google_Protobuf_Timestamp(date: term.since) }
                }
            }
            reply.storeMembers = members.map { member in
                .with {
                    $0.endpoint = member.endpoint
                    $0.healthy = member.error == nil
                    $0.error = member.error ?? ""
                    $0.leader = member.leader
                    $0.raftTerm = member.raftTerm
                }
            }
        }
    }
}
