//! A short unified diff of two texts, for `cnnc fmt --check`.

/// Lines of context around each change.
const CONTEXT: usize = 3;
/// Beyond this many cells the line-matching table is not built: the changed middle
/// is shown as removed, then added.
const TABLE_LIMIT: usize = 4_000_000;

#[derive(Clone, Copy, PartialEq)]
enum Tag {
    Same,
    Removed,
    Added,
}

/// `--- NAME` / `+++ NAME (formatted)` and `@@` hunks, as `diff -u` prints them.
pub fn unified(name: &str, old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let script = edit_script(&a, &b);
    let mut out = format!("--- {name}\n+++ {name} (formatted)\n");
    let hunks = hunk_ranges(&script);
    if hunks.is_empty() {
        out.push_str("@@ only line endings or the end of the file differ @@\n");
    }
    for (from, to) in hunks {
        out.push_str(&hunk(&script[from..to]));
    }
    out
}

/// Each line of either text, tagged, with its 1-based line numbers in both.
type Script<'a> = Vec<(Tag, &'a str, usize, usize)>;

fn edit_script<'a>(a: &[&'a str], b: &[&'a str]) -> Script<'a> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (middle_a, middle_b) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut tags = vec![Tag::Same; prefix];
    tags.extend(middle(middle_a, middle_b));
    tags.extend(std::iter::repeat_n(Tag::Same, suffix));
    let (mut i, mut j) = (0, 0);
    tags.into_iter()
        .map(|tag| {
            let line = match tag {
                Tag::Added => b[j],
                _ => a[i],
            };
            let entry = (tag, line, i + 1, j + 1);
            i += usize::from(tag != Tag::Added);
            j += usize::from(tag != Tag::Removed);
            entry
        })
        .collect()
}

/// The tags of the changed middle: a longest common subsequence where it is small
/// enough to compute.
fn middle(a: &[&str], b: &[&str]) -> Vec<Tag> {
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > TABLE_LIMIT {
        let mut tags = vec![Tag::Removed; n];
        tags.extend(std::iter::repeat_n(Tag::Added, m));
        return tags;
    }
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut tags) = (0, 0, Vec::with_capacity(n + m));
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            tags.push(Tag::Same);
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || common[i + 1][j] >= common[i][j + 1]) {
            tags.push(Tag::Removed);
            i += 1;
        } else {
            tags.push(Tag::Added);
            j += 1;
        }
    }
    tags
}

/// The ranges of the script to show: each change with its context, overlaps merged.
fn hunk_ranges(script: &Script) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (k, entry) in script.iter().enumerate() {
        if entry.0 == Tag::Same {
            continue;
        }
        let (from, to) = (
            k.saturating_sub(CONTEXT),
            (k + CONTEXT + 1).min(script.len()),
        );
        match ranges.last_mut() {
            Some(last) if from <= last.1 => last.1 = to,
            _ => ranges.push((from, to)),
        }
    }
    ranges
}

fn hunk(lines: &[(Tag, &str, usize, usize)]) -> String {
    let count = |tag: Tag| lines.iter().filter(|l| l.0 != tag).count();
    let (old_start, new_start) = lines.first().map_or((0, 0), |l| (l.2, l.3));
    let mut out = format!(
        "@@ -{old_start},{} +{new_start},{} @@\n",
        count(Tag::Added),
        count(Tag::Removed)
    );
    for (tag, line, _, _) in lines {
        let mark = match tag {
            Tag::Same => ' ',
            Tag::Removed => '-',
            Tag::Added => '+',
        };
        out.push(mark);
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified;

    #[test]
    fn shows_changed_lines_with_context() {
        let diff = unified("f", "a\nb\nc\nd\ne\nf\ng\nh\n", "a\nb\nc\nD\ne\nf\ng\nh\n");
        assert_eq!(
            diff,
            "--- f\n+++ f (formatted)\n@@ -1,7 +1,7 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n"
        );
    }

    #[test]
    fn insertions_and_deletions_number_both_sides() {
        let diff = unified("f", "x\ny\n", "x\nz\ny\n");
        assert!(diff.contains("@@ -1,2 +1,3 @@\n x\n+z\n y\n"), "{diff}");
        let diff = unified("f", "x\r\n", "x\n");
        assert!(diff.contains("only line endings"), "{diff}");
    }
}
