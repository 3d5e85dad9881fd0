extension [String: String] {
    /// Whether these labels pass a `label=KEY` (present) or `label=KEY=VALUE` filter.
    public func matches(labelFilter: String) -> Bool {
        let kv = labelFilter.split(separator: "=", maxSplits: 1).map(String.init)
        return kv.count == 2 ? self[kv[0]] == kv[1] : self[kv[0]] != nil
    }
}
