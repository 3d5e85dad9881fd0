import GRPCCore

/// Runs a long-lived streaming handler's work in a task that ends when gRPC
/// cancels the RPC: the client went away, its deadline passed, or the
/// server is stopping. gRPC reports that to the handler but does not cancel
/// the handler's task, so a handler that waits without writing (a quiet
/// `logs -f`, a watch with no new events) would otherwise wait forever.
@discardableResult
public func untilRPCCancelled<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let task = Task { try await body() }
    return try await withTaskCancellationHandler {
        try await withRPCCancellationHandler {
            try await task.value
        } onCancelRPC: {
            task.cancel()
        }
    } onCancel: {
        task.cancel()
    }
}
