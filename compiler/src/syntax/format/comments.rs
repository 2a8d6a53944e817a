//! Finding the comments of a source text, which the grammar skips silently.
//!
//! The language has no string literals and no rule that reads `/`, `*` or a newline
//! inside a token, so every `//` or `/*` outside a comment starts one: a byte scan finds
//! exactly the comments pest skipped, with their offsets.

/// A comment's byte range; a line comment ends before its newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Comment {
    pub start: usize,
    pub end: usize,
    pub line: bool,
}

/// Every comment of `source`, in order.
pub(super) fn scan(source: &str) -> Vec<Comment> {
    let bytes = source.as_bytes();
    let mut comments = Vec::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        let comment = match &bytes[i..i + 2] {
            b"//" => Comment {
                start: i,
                end: line_end(bytes, i),
                line: true,
            },
            b"/*" => Comment {
                start: i,
                end: source[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |at| i + 2 + at + 2),
                line: false,
            },
            _ => {
                i += 1;
                continue;
            }
        };
        i = comment.end;
        comments.push(comment);
    }
    comments
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map_or(bytes.len(), |at| from + at)
}

/// A comment as the formatter writes it: line comments lose trailing blanks, block
/// comments stay byte for byte.
pub(super) fn text<'s>(source: &'s str, comment: &Comment) -> &'s str {
    let text = &source[comment.start..comment.end];
    if comment.line { text.trim_end() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_line_and_block_comments() {
        let source = "a // one \r\nb /* two\n */ c /* // */ d //";
        let found: Vec<&str> = scan(source).iter().map(|c| text(source, c)).collect();
        assert_eq!(found, ["// one", "/* two\n */", "/* // */", "//"]);
    }

    #[test]
    fn an_unclosed_block_comment_runs_to_the_end() {
        let found = scan("a /* b");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].end, 6);
    }
}
