/// Names for containers created without `--name`, docker style: an
/// adjective and a pioneer of computing (`eager_hopper`).
enum NameGenerator {
    static let adjectives = [
        "admiring", "agile", "amazing", "bold", "brave", "calm", "careful", "clever", "cool", "crisp", "curious",
        "daring", "eager", "elegant", "fervent", "focused", "gentle", "happy", "honest", "jolly", "keen", "kind",
        "lucid", "modest", "nimble", "patient", "quiet", "quirky", "relaxed", "serene", "sharp", "steady", "swift",
        "tender", "tidy", "upbeat", "vibrant", "wise", "witty", "zealous",
    ]
    static let names = [
        "allen", "babbage", "backus", "bardeen", "berners", "boole", "cerf", "church", "codd", "conway", "cray",
        "dijkstra", "engelbart", "floyd", "goldberg", "hamilton", "hopper", "kahn", "kay", "knuth", "lamport",
        "liskov", "lovelace", "mccarthy", "minsky", "neumann", "perlman", "ritchie", "shannon", "shaw", "sutherland",
        "tarjan", "thompson", "torvalds", "turing", "wilkes", "wing", "wirth", "wozniak",
    ]

    static func make(avoiding taken: Set<String>) -> String {
        for attempt in 0..<1000 {
            var name = "\(adjectives.randomElement()!)_\(names.randomElement()!)"
            if attempt > 100 { name += String(Int.random(in: 1...9999)) }
            if !taken.contains(name) { return name }
        }
        return "berth_\(Int.random(in: 100_000...999_999))"
    }
}
