/// Docker's `--format`: `table TEMPLATE` (a header, columns aligned),
/// `json` (one object per line), or a template run for each item.
public struct DockerFormat: Sendable {
    /// What `--format` asked for.
    public enum Kind: Sendable, Equatable {
        case table
        case json
        case template
    }

    public let kind: Kind
    let template: Template?

    /// Parses `--format`; `defaultTable` is the command's own table layout
    /// (used for nothing, `table` alone, and the header's columns).
    ///
    /// - Throws: `TemplateError` ("template parsing error: …") for a
    ///   template that does not parse.
    public init(_ format: String?, defaultTable: String) throws {
        var text = format ?? "table"
        if text == "json" || text == "{{json .}}" {
            kind = .json
            template = nil
            return
        }
        if text == "table" { text = "table " + defaultTable }
        if text.hasPrefix("table") {
            kind = .table
            text = String(text.dropFirst(5))
        } else {
            kind = .template
        }
        text = Self.unescaped(text.trimmingSpaces)
        do {
            template = try Template(text)
        } catch let error as TemplateError {
            throw TemplateError("template parsing error: \(error.message)")
        }
    }

    /// Docker reads `\t` and `\n` typed in a format as a tab and a newline.
    public static func unescaped(_ text: String) -> String {
        var out = ""
        var chars = text.makeIterator()
        while let c = chars.next() {
            guard c == "\\" else {
                out.append(c)
                continue
            }
            switch chars.next() {
            case "t": out += "\t"
            case "n": out += "\n"
            case let other?: out += "\\" + String(other)
            case nil: out += "\\"
            }
        }
        return out
    }

    /// The lines for `items`, each item one template run and a newline;
    /// for a table, a header line made by running the template on
    /// `header` (each field its column's name), and the columns aligned
    /// as Go's tabwriter (minimum width 10, padding 3) aligns them.
    ///
    /// - Throws: `TemplateError` from a template that cannot run on an item.
    public func render(_ items: [TemplateValue], header: TemplateValue) throws -> String {
        switch kind {
        case .json:
            return items.map { $0.json(escapeHTML: false) + "\n" }.joined()
        case .template, .table:
            guard let template else { return "" }
            var body = ""
            for item in items { body += try template.execute(item) + "\n" }
            guard kind == .table else { return body }
            let heading = try template.with(functions: TemplateFunctions.dockerHeader).execute(header)
            return TabWriter.align(heading + "\n" + body, minWidth: 10, padding: 3)
        }
    }

    /// Checks a `--format` before anything is asked of the agent.
    ///
    /// - Throws: `TemplateError` ("template parsing error: …") for a
    ///   template that does not parse.
    public static func validate(_ format: String?) throws {
        guard let format, format != "json", format != "table" else { return }
        do {
            _ = try Template(unescaped(format.hasPrefix("table") ? String(format.dropFirst(5)) : format))
        } catch let error as TemplateError {
            throw TemplateError("template parsing error: \(error.message)")
        }
    }

    /// One value as `docker version` and `docker info` print it with
    /// `--format`: `json` (one line), or a template and a newline.
    ///
    /// - Throws: `TemplateError` ("template parsing error: …") for a
    ///   template that does not parse or cannot run on the value.
    public static func one(_ item: TemplateValue, format: String) throws -> String {
        if format == "json" || format == "{{json .}}" { return item.json(escapeHTML: false) + "\n" }
        do {
            return try Template(format).execute(item) + "\n"
        } catch let error as TemplateError {
            throw TemplateError("template parsing error: \(error.message)")
        }
    }

    /// What `docker inspect` prints for `items`: without a format, a JSON
    /// array indented by four spaces; `json`, the array on one line; a
    /// template, its text for each item and a newline (a newline alone
    /// when no item gave any), and an error for each item it cannot run on
    /// (`map has no entry for key "X"`), the others printed.
    ///
    /// - Throws: `TemplateError` ("template parsing error: …") for a
    ///   template that does not parse; then nothing is printed.
    public static func inspect(_ items: [TemplateValue], format: String?) throws -> (output: String, errors: [String]) {
        switch format {
        case nil, "": return (TemplateValue.list(items).json(escapeHTML: false, indent: "    ") + "\n", [])
        case "json": return (TemplateValue.list(items).json(escapeHTML: false) + "\n", [])
        case let text?:
            let template: Template
            do {
                template = try Template(text)
            } catch let error as TemplateError {
                throw TemplateError("template parsing error: \(error.message)")
            }
            var output = ""
            var errors: [String] = []
            for item in items {
                do {
                    output += try template.execute(item, missingField: .mapError) + "\n"
                } catch let error as TemplateError {
                    errors.append("template parsing error: \(error.message)")
                }
            }
            return (output.isEmpty ? "\n" : output, errors)
        }
    }
}

/// Go's text/tabwriter with a space as padding: each tab-terminated cell
/// padded to its column's width, a column being a run of lines that have
/// that cell.
public enum TabWriter {
    public static func align(_ text: String, minWidth: Int, padding: Int) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        }
        var out = ""
        var widths: [Int] = []
        format(lines, 0..<lines.count, &widths, minWidth: minWidth, padding: padding, into: &out)
        // The split made one line more than there were newlines.
        if out.hasSuffix("\n") { out.removeLast() }
        return out
    }

    private static func format(_ lines: [[String]], _ range: Range<Int>, _ widths: inout [Int], minWidth: Int, padding: Int, into out: inout String) {
        var start = range.lowerBound
        let column = widths.count
        var this = range.lowerBound
        while this < range.upperBound {
            guard column < lines[this].count - 1 else {
                this += 1
                continue
            }
            write(lines, start..<this, widths, into: &out)
            start = this
            var width = minWidth
            while this < range.upperBound, column < lines[this].count - 1 {
                width = max(width, lines[this][column].unicodeScalars.count + padding)
                this += 1
            }
            widths.append(width)
            format(lines, start..<this, &widths, minWidth: minWidth, padding: padding, into: &out)
            widths.removeLast()
            start = this
        }
        write(lines, start..<range.upperBound, widths, into: &out)
    }

    private static func write(_ lines: [[String]], _ range: Range<Int>, _ widths: [Int], into out: inout String) {
        for line in lines[range] {
            for (j, cell) in line.enumerated() {
                out += cell
                if j < widths.count, j < line.count - 1 {
                    out += String(repeating: " ", count: max(0, widths[j] - cell.unicodeScalars.count))
                }
            }
            out += "\n"
        }
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
