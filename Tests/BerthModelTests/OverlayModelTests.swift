import BerthModel
import Foundation
import Testing

@Suite("overlay model")
struct OverlayModelTests {
    @Test("--publish: the long form with its defaults (tcp, mode ingress, as docker's), the short form (mode host); what is wrong is named")
    func publish() throws {
        let long = try ServicePort(parsing: "published=8080,target=80")
        #expect(long == ServicePort(published: 8080, target: 80, transport: .tcp, mode: .ingress))
        #expect(try ServicePort(parsing: "published=53,target=53,protocol=udp,mode=ingress") == ServicePort(published: 53, target: 53, transport: .udp, mode: .ingress))
        #expect(try ServicePort(parsing: "8080:80/udp") == ServicePort(published: 8080, target: 80, transport: .udp, mode: .host))
        for (text, words) in [
            ("published=8080", "target=PORT"), ("target=80", "published=PORT"), ("published=8080,target=80,mode=mesh", "mode is host or ingress"),
            ("published=8080,target=80,protocol=sctp", "tcp or udp"), ("published=8080,target=80,size=1", "\"size=1\""), ("80", "PUBLISHED:TARGET"),
        ] {
            let error = #expect(throws: BerthError.self) { try ServicePort(parsing: text) }
            #expect(error?.message.contains(words) == true, "\(text): \(error?.message ?? "")")
        }
    }

    @Test("a service spec: overlays given once each, ingress only over one, no port twice, not --publish and -p together; old records decode with the defaults")
    func spec() throws {
        var spec = ServiceSpec(name: "web", container: ContainerSpec(image: "busybox"), networks: ["app"])
        try spec.validate()
        spec.networks = ["app", "db"]
        try spec.validate()
        spec.networks = ["app", "app"]
        #expect(throws: BerthError.self) { try spec.validate() }
        spec.networks = ["app"]
        spec.publish = [ServicePort(published: 80, target: 80, mode: .ingress)]
        try spec.validate()
        spec.networks = []
        let mesh = #expect(throws: BerthError.self) { try spec.validate() }
        #expect(mesh?.message.contains("mode=ingress reaches replicas over an overlay network") == true)
        spec.networks = ["app"]
        spec.publish = [ServicePort(published: 80, target: 80), ServicePort(published: 80, target: 81)]
        #expect(throws: BerthError.self) { try spec.validate() }
        spec.publish = [ServicePort(published: 80, target: 80)]
        try spec.validate()
        #expect(try EndpointMode(parsing: "DNSRR") == .dnsrr)
        #expect(throws: BerthError.self) { try EndpointMode(parsing: "round-robin") }

        // Records written before overlays have none.
        let old = #"{"name":"web","replicas":2,"container":\#(String(decoding: try BerthJSON.encoder(pretty: false).encode(ContainerSpec(image: "busybox")), as: UTF8.self))}"#
        let decoded = try BerthJSON.decoder().decode(ServiceSpec.self, from: Data(old.utf8))
        #expect(decoded.networks.isEmpty && decoded.endpointMode == .vip && decoded.publish.isEmpty)
        let roundTrip = try BerthJSON.decoder().decode(ServiceSpec.self, from: try BerthJSON.encoder(pretty: false).encode(spec))
        #expect(roundTrip == spec)
    }
}
