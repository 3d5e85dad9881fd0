/// A command line written as one string, split into words as a POSIX shell
/// splits them (without expansions): blanks separate words, single quotes
/// keep everything literally, double quotes keep everything but `\"`, `\\`,
/// `\$` and `` \` ``, and a backslash outside quotes keeps the next character.
///
/// `sh -c 'sleep 2; exit 1'` is three words: `sh`, `-c`, `sleep 2; exit 1`.
public enum ShellWords {
    /// - Throws: `BerthError.invalidArgument` for an unterminated quote or a
    ///   trailing backslash.
    public static func split(_ text: String, for flag: String = "--args") throws -> [String] {
        var words: [String] = []
        var word = ""
        var inWord = false
        var iterator = text.makeIterator()
        while let c = iterator.next() {
            switch c {
            case " ", "\t", "\n":
                if inWord {
                    words.append(word)
                    word = ""
                    inWord = false
                }
            case "'":
                inWord = true
                var closed = false
                while let q = iterator.next() {
                    if q == "'" {
                        closed = true
                        break
                    }
                    word.append(q)
                }
                guard closed else { throw BerthError.invalid("\(flag) \(text): a single quote is not closed") }
            case "\"":
                inWord = true
                var closed = false
                while let q = iterator.next() {
                    if q == "\"" {
                        closed = true
                        break
                    }
                    if q == "\\" {
                        guard let next = iterator.next() else { break }
                        if !["\"", "\\", "$", "`"].contains(next) { word.append("\\") }
                        word.append(next)
                        continue
                    }
                    word.append(q)
                }
                guard closed else { throw BerthError.invalid("\(flag) \(text): a double quote is not closed") }
            case "\\":
                guard let next = iterator.next() else { throw BerthError.invalid("\(flag) \(text): it ends with a lone backslash") }
                inWord = true
                if next != "\n" { word.append(next) }
            default:
                inWord = true
                word.append(c)
            }
        }
        if inWord { words.append(word) }
        return words
    }
}
