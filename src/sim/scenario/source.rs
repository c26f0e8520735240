//! Where in a scenario's text an error is: the nesting pre-scan that runs before serde_yaml,
//! paths to nodes (`steps[3].channel`) found again in the text after a check on the parsed
//! values, and the line, column and caret width of a position.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::{Cell, RefCell};
use std::fmt;

/// Levels of nesting (block indentation plus `[`/`{`) a scenario may use; deeper text is
/// refused before serde_yaml reads it, so parsing stays linear in the file's size.
pub const NESTING_MAX: usize = 128;

/// One step of a path from the document's root to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

impl From<&str> for Seg {
    fn from(key: &str) -> Seg {
        Seg::Key(key.to_string())
    }
}

impl From<usize> for Seg {
    fn from(idx: usize) -> Seg {
        Seg::Index(idx)
    }
}

/// A check that failed on a parsed value, with the node it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Problem {
    /// What is wrong and what was expected.
    pub(super) message: String,
    /// The node, from the document's root.
    pub(super) path: Vec<Seg>,
    /// Point at the last key of `path` rather than at its value.
    pub(super) at_key: bool,
}

impl Problem {
    /// A problem with the node at `path` (its value).
    pub(super) fn at<S: Into<Seg>>(
        message: impl Into<String>,
        path: impl IntoIterator<Item = S>,
    ) -> Problem {
        Problem {
            message: message.into(),
            path: path.into_iter().map(Into::into).collect(),
            at_key: false,
        }
    }

    /// A problem with the key ending `path`.
    pub(super) fn key<S: Into<Seg>>(
        message: impl Into<String>,
        path: impl IntoIterator<Item = S>,
    ) -> Problem {
        Problem {
            at_key: true,
            ..Problem::at(message, path)
        }
    }

    /// A problem with the node a check was given, before it knows where that node is.
    pub(super) fn here(message: impl Into<String>) -> Problem {
        Problem::at::<Seg>(message, [])
    }

    /// The same problem, with `prefix` (the path of the node the check was given) in front.
    pub(super) fn within<S: Into<Seg>>(mut self, prefix: impl IntoIterator<Item = S>) -> Problem {
        let mut path: Vec<Seg> = prefix.into_iter().map(Into::into).collect();
        path.append(&mut self.path);
        self.path = path;
        self
    }
}

impl From<String> for Problem {
    fn from(message: String) -> Problem {
        Problem::here(message)
    }
}

/// Where a check that fails during deserialization leaves its [`Problem`]: serde's error only
/// carries the message out, and the loader then finds the node in the text.
#[derive(Clone, Copy)]
pub(super) struct Found<'a>(pub(super) &'a RefCell<Option<Problem>>);

impl Found<'_> {
    /// Records `problem` and returns the error that unwinds the deserializer.
    pub(super) fn fail<E: de::Error>(self, problem: Problem) -> E {
        let error = E::custom(&problem.message);
        *self.0.borrow_mut() = Some(problem);
        error
    }
}

/// A position in the text: 1-based line and column (in characters), as serde_yaml counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LineColumn {
    pub(super) line: usize,
    pub(super) column: usize,
}

/// The line breaks libyaml counts (CRLF is one).
fn break_len(text: &str, at: usize) -> Option<usize> {
    let rest = &text[at..];
    if rest.starts_with("\r\n") {
        Some(2)
    } else {
        rest.chars()
            .next()
            .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
            .map(char::len_utf8)
    }
}

/// The byte offset of `at`, or the end of its line when the column is past it.
pub(super) fn offset_of(text: &str, at: LineColumn) -> usize {
    let mut offset = 0;
    let mut line = 1;
    while line < at.line && offset < text.len() {
        match break_len(text, offset) {
            Some(len) => {
                offset += len;
                line += 1;
            }
            None => offset += text[offset..].chars().next().map_or(1, char::len_utf8),
        }
    }
    let mut column = 1;
    while column < at.column && offset < text.len() && break_len(text, offset).is_none() {
        offset += text[offset..].chars().next().map_or(1, char::len_utf8);
        column += 1;
    }
    offset
}

/// The line and column of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> LineColumn {
    let (mut at, mut line, mut column) = (0, 1, 1);
    while at < offset.min(text.len()) {
        match break_len(text, at) {
            Some(len) => {
                at += len;
                line += 1;
                column = 1;
            }
            None => {
                at += text[at..].chars().next().map_or(1, char::len_utf8);
                column += 1;
            }
        }
    }
    LineColumn { line, column }
}

/// The text of the line holding `offset`, without its break.
pub(super) fn line_text(text: &str, offset: usize) -> &str {
    let offset = offset.min(text.len());
    let mut start = 0;
    let mut at = 0;
    while at < offset {
        match break_len(text, at) {
            Some(len) => {
                at += len;
                start = at;
            }
            None => at += text[at..].chars().next().map_or(1, char::len_utf8),
        }
    }
    let mut end = start;
    while end < text.len() && break_len(text, end).is_none() {
        end += text[end..].chars().next().map_or(1, char::len_utf8);
    }
    &text[start..end]
}

/// How many characters the token at `offset` spans on its line (at least 1): a quoted scalar
/// with its quotes, a flow collection closed on the same line, or a plain scalar up to the
/// next indicator, comment or the end of the line.
pub(super) fn token_width(text: &str, offset: usize) -> usize {
    let line = line_text(text, offset);
    let line_start = line.as_ptr() as usize - text.as_ptr() as usize;
    let Some(rest) = offset
        .checked_sub(line_start)
        .and_then(|skip| line.get(skip..))
    else {
        return 1;
    };
    let before = &line[..line.len() - rest.len()];
    let chars: Vec<char> = rest.chars().collect();
    let width = match chars.first() {
        None => 0,
        Some(quote @ ('"' | '\'')) => {
            let mut idx = 1;
            let mut end = None;
            while idx < chars.len() {
                match chars[idx] {
                    '\\' if *quote == '"' => idx += 1,
                    '\'' if *quote == '\'' && chars.get(idx + 1) == Some(&'\'') => idx += 1,
                    c if c == *quote => {
                        end = Some(idx + 1);
                        break;
                    }
                    _ => {}
                }
                idx += 1;
            }
            end.unwrap_or(chars.len())
        }
        Some('[' | '{') => {
            let mut depth = 0usize;
            let mut end = 1;
            for (idx, c) in chars.iter().enumerate() {
                match c {
                    '[' | '{' => depth += 1,
                    ']' | '}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = idx + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            end
        }
        Some(_) => {
            // Inside `[...]` or `{...}` opened earlier on the line, `,` `]` `}` end a scalar.
            let open = before.matches(['[', '{']).count();
            let close = before.matches([']', '}']).count();
            let flow = open > close;
            let mut end = chars.len();
            for (idx, c) in chars.iter().enumerate() {
                let next = chars.get(idx + 1).copied();
                let ends = match c {
                    ':' => {
                        next.is_none_or(|n| n == ' ' || n == '\t' || (flow && ",]}".contains(n)))
                    }
                    '#' => idx > 0 && matches!(chars[idx - 1], ' ' | '\t'),
                    ',' | ']' | '}' => flow,
                    _ => false,
                };
                if ends && idx > 0 {
                    end = idx;
                    break;
                }
            }
            while end > 1 && matches!(chars[end - 1], ' ' | '\t') {
                end -= 1;
            }
            end
        }
    };
    width.max(1)
}

/// The node at `problem`'s path, found by deserializing the text again with a seed that walks
/// the path and fails there: serde_yaml gives that failure the node's line and column.
/// `None` if the path is not in the text.
pub(super) fn find(text: &str, problem: &Problem) -> Option<LineColumn> {
    let reached = Cell::new(false);
    let seed = Walk {
        path: &problem.path,
        at_key: problem.at_key,
        reached: &reached,
    };
    let error = seed
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()?;
    let location = error.location()?;
    reached.get().then_some(LineColumn {
        line: location.line(),
        column: location.column(),
    })
}

struct Walk<'p> {
    path: &'p [Seg],
    at_key: bool,
    reached: &'p Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.path.first() {
            None => {
                self.reached.set(true);
                deserializer.deserialize_any(Here)
            }
            Some(Seg::Key(_)) => deserializer.deserialize_map(self),
            Some(Seg::Index(_)) => deserializer.deserialize_seq(self),
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the node on the path")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some(Seg::Key(key)) = self.path.first() else {
            return Ok(());
        };
        let rest = &self.path[1..];
        let stop = self.at_key && rest.is_empty();
        while let Some(matched) = map.next_key_seed(KeyProbe {
            key,
            stop,
            reached: self.reached,
        })? {
            if matched {
                return map.next_value_seed(Walk {
                    path: rest,
                    at_key: self.at_key,
                    reached: self.reached,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some(Seg::Index(idx)) = self.path.first() else {
            return Ok(());
        };
        for _ in 0..*idx {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Walk {
            path: &self.path[1..],
            at_key: self.at_key,
            reached: self.reached,
        })
        .map(|_| ())
    }
}

/// Fails on whatever node it is given: serde_yaml locates the failure at that node.
struct Here;

impl Visitor<'_> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nothing: this is the node looked for")
    }
}

/// Reads a mapping key: true if it is `key`; fails there if `stop`.
struct KeyProbe<'p> {
    key: &'p str,
    stop: bool,
    reached: &'p Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if key == self.key && self.stop {
            self.reached.set(true);
            return Err(E::custom("this is the key looked for"));
        }
        Ok(key == self.key)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

/// What the pre-scan saw of a text it did not refuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Scan {
    /// Byte offset of the first content (not a comment, a directive or a document marker).
    pub(super) content: Option<usize>,
    /// Byte offset of the first alias (`*name`).
    pub(super) first_alias: Option<usize>,
    /// Byte offset of a second document's start, if there is one.
    pub(super) second_document: Option<usize>,
    /// The deepest nesting seen.
    pub(super) deepest: usize,
}

/// Why the pre-scan refused a text, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) message: String,
    pub(super) offset: usize,
}

/// One pass over the text, before serde_yaml sees it: the nesting depth (block indentation
/// levels plus open `[`/`{`, outside quoted scalars, block scalars and comments) must stay
/// within [`NESTING_MAX`], and where content, aliases and a second document start. Linear in
/// the text's length; stops at the first level too deep.
pub(super) fn prescan(text: &str) -> Result<Scan, Refusal> {
    let b = text.as_bytes();
    let n = b.len();
    let mut scan = Scan::default();
    let mut flow = 0usize;
    // Columns of the open block collections.
    let mut blocks: Vec<usize> = Vec::new();
    // The previous line ended inside a plain scalar, which a more indented line continues.
    let mut continues = false;
    let mut document_ended = false;
    let mut i = 0;
    let too_deep = |offset: usize| {
        Refusal {
        message: format!(
            "nesting deeper than {NESTING_MAX} levels; a scenario needs a few (refused before parsing)"
        ),
        offset,
    }
    };
    let space_or_end = |at: usize| at >= n || matches!(b[at], b' ' | b'\t' | b'\n' | b'\r');
    while i < n {
        let line = i;
        while i < n && b[i] == b' ' {
            i += 1;
        }
        let indent = i - line;
        if i >= n || matches!(b[i], b'\n' | b'\r') || (b[i] == b'#') {
            i = skip_line(b, i);
            continue;
        }
        if flow == 0 && indent == 0 {
            let marker = |m: &[u8]| b[i..].starts_with(m) && space_or_end(i + 3);
            if marker(b"---") {
                if scan.content.is_some() {
                    scan.second_document = Some(i);
                    return Ok(scan);
                }
                i += 3;
            } else if marker(b"...") {
                document_ended = scan.content.is_some();
                i = skip_line(b, i);
                continue;
            } else if b[i] == b'%' && scan.content.is_none() {
                i = skip_line(b, i);
                continue;
            }
        }
        while i < n && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i >= n || matches!(b[i], b'\n' | b'\r' | b'#') {
            i = skip_line(b, i);
            continue;
        }
        if document_ended {
            scan.second_document = Some(i);
            return Ok(scan);
        }
        scan.content.get_or_insert(i);
        if flow == 0 {
            if continues && blocks.last().is_some_and(|top| indent > *top) {
                i = skip_line(b, i);
                continue;
            }
            while blocks.last().is_some_and(|top| *top > indent) {
                blocks.pop();
            }
            if blocks.last().is_none_or(|top| *top < indent) {
                blocks.push(indent);
            }
            if blocks.len() > NESTING_MAX {
                return Err(too_deep(i));
            }
        }
        // The rest of the line (and of any quoted scalar or flow collection it opens).
        let mut node_start = true;
        let mut plain = false;
        let mut owner = i - line;
        let mut line_start = line;
        while i < n && !(matches!(b[i], b'\n' | b'\r') && flow == 0) {
            let c = b[i];
            let column = i - line_start;
            match c {
                b'\n' | b'\r' => {
                    // A line break inside a flow collection.
                    i += 1;
                    line_start = i;
                    plain = false;
                    continue;
                }
                b' ' | b'\t' => {}
                b'#' if i == line_start || matches!(b[i - 1], b' ' | b'\t') => {
                    while i < n && !matches!(b[i], b'\n' | b'\r') {
                        i += 1;
                    }
                    continue;
                }
                b'"' | b'\'' if node_start => {
                    if flow == 0 {
                        owner = column;
                    }
                    i += 1;
                    while i < n {
                        match b[i] {
                            b'\\' if c == b'"' => i += 1,
                            b'\'' if c == b'\'' && b.get(i + 1) == Some(&b'\'') => i += 1,
                            q if q == c => break,
                            b'\n' => line_start = i + 1,
                            _ => {}
                        }
                        i += 1;
                    }
                    node_start = false;
                    plain = false;
                }
                b'[' | b'{' if node_start || flow > 0 => {
                    flow += 1;
                    scan.deepest = scan.deepest.max(blocks.len() + flow);
                    if blocks.len() + flow > NESTING_MAX {
                        return Err(too_deep(i));
                    }
                    node_start = true;
                    plain = false;
                }
                b']' | b'}' if flow > 0 => {
                    flow -= 1;
                    node_start = false;
                    plain = false;
                }
                b',' if flow > 0 => {
                    node_start = true;
                    plain = false;
                }
                b'-' | b'?' if node_start && space_or_end(i + 1) => {
                    if flow == 0 {
                        owner = column;
                        let inner = column + 2;
                        if blocks.last().is_none_or(|top| *top < inner) {
                            blocks.push(inner);
                        }
                        if blocks.len() > NESTING_MAX {
                            return Err(too_deep(i));
                        }
                    }
                    node_start = true;
                    plain = false;
                }
                b':' if space_or_end(i + 1)
                    || (flow > 0 && matches!(b.get(i + 1), Some(b',' | b']' | b'}'))) =>
                {
                    node_start = true;
                    plain = false;
                }
                b'&' | b'!' | b'*' if node_start => {
                    if c == b'*' {
                        scan.first_alias.get_or_insert(i);
                    }
                    while i < n
                        && !space_or_end(i)
                        && !(flow > 0 && matches!(b[i], b',' | b']' | b'}'))
                    {
                        i += 1;
                    }
                    node_start = c != b'*';
                    plain = c == b'*';
                    continue;
                }
                b'|' | b'>' if node_start && flow == 0 => {
                    // A block scalar: its lines are those more indented than its owner.
                    i = skip_line(b, i);
                    loop {
                        let mut j = i;
                        while j < n && b[j] == b' ' {
                            j += 1;
                        }
                        let blank = j >= n || matches!(b[j], b'\n' | b'\r');
                        if i >= n || !(blank || j - i > owner) {
                            break;
                        }
                        i = skip_line(b, j);
                    }
                    plain = false;
                    break;
                }
                _ => {
                    if node_start && flow == 0 {
                        owner = column;
                    }
                    node_start = false;
                    plain = true;
                }
            }
            i += 1;
        }
        scan.deepest = scan.deepest.max(blocks.len() + flow);
        continues = plain && flow == 0;
        if i < n && matches!(b[i], b'\n' | b'\r') {
            i = skip_line(b, i);
        }
    }
    Ok(scan)
}

/// The offset after the line break ending the line that holds `at`.
fn skip_line(b: &[u8], mut at: usize) -> usize {
    while at < b.len() && !matches!(b[at], b'\n' | b'\r') {
        at += 1;
    }
    if b.get(at) == Some(&b'\r') {
        at += 1;
    }
    if b.get(at) == Some(&b'\n') {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prescan_counts_flow_and_block_levels() {
        let deepest = |text: &str| prescan(text).expect("accepted").deepest;
        assert_eq!(deepest("a: 1\n"), 1);
        assert_eq!(deepest("a:\n  b:\n    c: [[1]]\n"), 5);
        assert_eq!(deepest("a: \"[[[[\"\nb: '{{'\n"), 1);
        assert_eq!(deepest("a: |\n  [[[[\n  {{\nb: 1 # [[[\n"), 1);
        assert_eq!(deepest("a: see [1] and [2\n"), 1);
        assert_eq!(deepest("a: one\n    two\n      three\n"), 1);
        assert_eq!(deepest("- - - x\n"), 4);
        let deep = format!("description: {}\n", "[".repeat(40_000));
        let refusal = prescan(&deep).expect_err("refused");
        assert_eq!(refusal.offset, "description: ".len() + NESTING_MAX - 1);
    }

    #[test]
    fn the_prescan_finds_a_second_document_and_aliases() {
        let scan = prescan("---\na: 1\n---\nb: 2\n").expect("scanned");
        assert_eq!(scan.second_document, Some(9));
        let scan = prescan("a: 1\n...\nb: 2\n").expect("scanned");
        assert_eq!(scan.second_document, Some(9));
        let scan = prescan("a: &x [1]\nb: *x\n").expect("scanned");
        assert_eq!(scan.first_alias, Some(13));
        assert_eq!(
            prescan("# only a comment\n\n").expect("scanned").content,
            None
        );
    }

    #[test]
    fn widths_cover_the_token() {
        let text = "  - {op: open, as: c1, by: alice, type: consultng, target: bob}\n";
        let at = text.find("consultng").expect("there");
        assert_eq!(token_width(text, at), "consultng".len());
        assert_eq!(token_width("a: \"x, y\" # c\n", 3), 6);
        assert_eq!(token_width("name: some name # c\n", 6), 9);
        assert_eq!(
            line_column("a\r\nbé: x\n", 7),
            LineColumn { line: 2, column: 4 }
        );
        assert_eq!(
            offset_of("a\r\nbé: x\n", LineColumn { line: 2, column: 4 }),
            7
        );
    }
}
