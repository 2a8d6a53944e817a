//! The layout engine: the tree walk hands it tokens with their source offsets and asks
//! for the whitespace between them; it indents, and it puts every comment back between
//! the same two tokens it sat between in the source. That keeps a line comment where
//! the grammar allowed the newline that ends it, so the output always parses.

use super::comments::{self, Comment};

/// The whitespace the layout wants before the next token, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Gap {
    None,
    Space,
    Line,
    /// A line break, or two where the source had a blank line.
    KeepBlank,
    Blank,
}

const INDENT: &str = "    ";

pub(super) struct Printer<'s> {
    source: &'s str,
    comments: Vec<Comment>,
    /// The first comment not yet written.
    next_comment: usize,
    out: String,
    /// Open braces: statement indentation.
    depth: usize,
    /// Open parentheses and brackets: their contents indent one more level when broken.
    parens: usize,
    pending: Gap,
    /// Whether a line break in `pending` continues an expression (indented once more).
    continues: bool,
    /// Whether the current output line is such a continuation.
    line_continues: bool,
    /// The source offset just after the last token or comment written.
    last_end: usize,
    /// The source offset of the first thing on the current output line, and the
    /// column it was written at.
    line_source: usize,
    line_indent: usize,
}

impl<'s> Printer<'s> {
    pub fn new(source: &'s str) -> Self {
        Printer {
            source,
            comments: comments::scan(source),
            next_comment: 0,
            out: String::new(),
            depth: 0,
            parens: 0,
            pending: Gap::None,
            continues: false,
            line_continues: false,
            last_end: 0,
            line_source: 0,
            line_indent: 0,
        }
    }

    /// Asks for at least `gap` before the next token; `continues` says whether a line
    /// break there continues an expression.
    pub fn gap(&mut self, gap: Gap, continues: bool) {
        if gap > self.pending {
            self.pending = gap;
            self.continues = continues;
        }
    }

    /// A space, or a line break where the source broke the line between `from` and
    /// `to` (the grammar allowed it there, so it may stay).
    pub fn soft(&mut self, from: usize, to: usize, continues: bool) {
        let gap = if self.newline_between(from, to) {
            Gap::Line
        } else {
            Gap::Space
        };
        self.gap(gap, continues);
    }

    /// Like [`Printer::soft`], but nothing at all when the source stayed on one line.
    pub fn soft_none(&mut self, from: usize, to: usize) {
        if self.newline_between(from, to) {
            self.gap(Gap::Line, false);
        }
    }

    pub fn token(&mut self, text: &str, at: usize) {
        self.place_comments(at, false);
        self.emit(text, at);
    }

    /// Punctuation the source may not have at this spot (a comma the layout adds or
    /// moves): written right after the previous token, without moving any comment.
    pub fn glue(&mut self, text: &str) {
        self.write_gap(self.last_end);
        self.write(text, self.last_end);
    }

    pub fn open_paren(&mut self, text: &str, at: usize) {
        self.token(text, at);
        self.parens += 1;
    }

    pub fn close_paren(&mut self, text: &str, at: usize) {
        self.place_comments(at, true);
        self.parens = self.parens.saturating_sub(1);
        self.emit(text, at);
    }

    pub fn open_brace(&mut self, at: usize) {
        self.token("{", at);
        self.depth += 1;
    }

    /// Closes a body; `gap` replaces whatever the body's last statement asked for, so
    /// no blank line stays before a `}`.
    pub fn close_brace(&mut self, at: usize, gap: Gap) {
        self.place_comments(at, false);
        self.depth = self.depth.saturating_sub(1);
        self.pending = gap;
        self.continues = false;
        self.emit("}", at);
    }

    /// Writes the comments left at the end of the file and returns the text.
    pub fn finish(mut self) -> String {
        self.place_comments(self.source.len(), false);
        trim_line_end(&mut self.out);
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        self.out
    }

    /// Whether any comment lies between `from` and `to`.
    pub fn has_comment(&self, from: usize, to: usize) -> bool {
        let first = self.comments.partition_point(|c| c.start < from);
        self.comments.get(first).is_some_and(|c| c.start < to)
    }

    /// Whether the source has a line break between `from` and `to` outside comments.
    pub fn newline_between(&self, from: usize, to: usize) -> bool {
        if from >= to {
            return false;
        }
        let mut at = from;
        let first = self.comments.partition_point(|c| c.start < from);
        for comment in self.comments[first..].iter().take_while(|c| c.end <= to) {
            if self.source.get(at..comment.start).is_some_and(has_newline) {
                return true;
            }
            at = comment.end;
        }
        at < to && self.source.get(at..to).is_some_and(has_newline)
    }

    /// The offset of `literal` in the source between `from` and `to`, outside comments.
    /// The tree walk uses it for the punctuation pest does not keep in its tree.
    pub fn find(&self, from: usize, to: usize, literal: &str) -> Option<usize> {
        let mut at = from;
        let first = self.comments.partition_point(|c| c.start < from);
        let mut comments = self.comments[first..].iter().peekable();
        while at < to.min(self.source.len()) {
            if let Some(c) = comments.next_if(|c| c.start <= at) {
                at = at.max(c.end);
                continue;
            }
            let rest = self.source.get(at..).unwrap_or_default();
            if rest.starts_with(literal) {
                return Some(at);
            }
            at += rest.chars().next().map_or(1, char::len_utf8);
        }
        None
    }

    fn emit(&mut self, text: &str, at: usize) {
        self.write_gap(at);
        self.write(text, at);
        self.last_end = at + text.len();
    }

    /// Writes the comments that start before `at`, each on the line it had: after code
    /// on the same source line, or on a line of its own. `closing`: the next token is a
    /// closing bracket, which a comment before it does not push away.
    fn place_comments(&mut self, at: usize, closing: bool) {
        while let Some(&comment) = self.comments.get(self.next_comment) {
            if comment.start >= at {
                break;
            }
            self.next_comment += 1;
            let own_line =
                self.at_line_start() || self.newline_between(self.last_end, comment.start);
            if own_line {
                self.comment_on_own_line(comment, at);
            } else {
                self.comment_after_code(comment, closing);
            }
            self.last_end = comment.end;
        }
    }

    fn comment_on_own_line(&mut self, comment: Comment, at: usize) {
        if self.pending < Gap::KeepBlank {
            self.pending = Gap::Line;
        }
        let continues = self.continues;
        self.write_gap(comment.start);
        self.write(comments::text(self.source, &comment), comment.start);
        let next = self
            .comments
            .get(self.next_comment)
            .map_or(at, |c| c.start.min(at));
        let after = self.source.get(comment.end..next).unwrap_or("");
        self.pending = if comment.line || has_newline(after) {
            Gap::KeepBlank
        } else {
            Gap::Space
        };
        self.continues = continues;
    }

    /// A comment after code stays after it. A line comment keeps its distance from the
    /// start of its line's code while the code leaves room (and the line is the one it
    /// was on), so comments aligned by hand stay aligned, even when re-indented.
    /// The space around a block comment is the layout's, never the source's, so that a
    /// second run writes the same.
    fn comment_after_code(&mut self, comment: Comment, closing: bool) {
        if self.pending == Gap::Space {
            self.pending = Gap::None;
        }
        let line = &self.out[self.out.rfind('\n').map_or(0, |at| at + 1)..];
        let column = line.chars().count();
        let same_line = self
            .source
            .get(self.line_source..comment.start)
            .is_some_and(|code| !has_newline(code));
        let wanted = (self.line_indent + self.source_column(comment.start))
            .saturating_sub(self.source_column(self.line_source));
        let padding = if comment.line && same_line && wanted > column {
            wanted - column
        } else {
            1
        };
        self.out.extend(std::iter::repeat_n(' ', padding));
        self.out.push_str(comments::text(self.source, &comment));
        let after = match (comment.line, closing) {
            (true, _) => Gap::Line,
            (false, false) => Gap::Space,
            (false, true) => Gap::None,
        };
        if after > self.pending {
            self.pending = after;
        }
    }

    /// The column of a source offset, in characters.
    fn source_column(&self, offset: usize) -> usize {
        let before = self.source.get(..offset).unwrap_or_default();
        let line_start = before.rfind(['\n', '\r']).map_or(0, |at| at + 1);
        before[line_start..].chars().count()
    }

    /// Writes the whitespace `pending` asks for before something at source offset `at`.
    fn write_gap(&mut self, at: usize) {
        let gap = std::mem::replace(&mut self.pending, Gap::None);
        let continues = std::mem::take(&mut self.continues);
        if self.out.is_empty() {
            return;
        }
        let blank = match gap {
            Gap::None => return,
            Gap::Space => {
                if !self.at_line_start() {
                    self.out.push(' ');
                }
                return;
            }
            Gap::Line => false,
            Gap::KeepBlank => {
                let between = self.source.get(self.last_end.min(at)..at).unwrap_or("");
                newlines(between) >= 2
            }
            Gap::Blank => true,
        };
        if !self.at_line_start() {
            trim_line_end(&mut self.out);
            self.out.push('\n');
        }
        if blank && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
        self.line_continues = continues;
    }

    fn write(&mut self, text: &str, at: usize) {
        if self.at_line_start() {
            let levels = self.depth + self.parens + usize::from(self.line_continues);
            self.line_source = at;
            self.line_indent = levels * INDENT.len();
            for _ in 0..levels {
                self.out.push_str(INDENT);
            }
        }
        self.out.push_str(text);
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }
}

fn has_newline(text: &str) -> bool {
    text.contains(['\n', '\r'])
}

/// Line breaks in `text`, counting `\r\n` once.
fn newlines(text: &str) -> usize {
    text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count()
}

fn trim_line_end(out: &mut String) {
    let trimmed = out.trim_end_matches([' ', '\t']).len();
    out.truncate(trimmed);
}
