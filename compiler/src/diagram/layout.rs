//! A small layered (Sugiyama-style) layout, top to bottom, with nested clusters:
//!
//! 1. ranks by longest path from the sources, so every edge points down;
//! 2. edges spanning several ranks get a dummy vertex per rank crossed, so they can be
//!    routed between the boxes;
//! 3. the order within each rank by barycenter sweeps, sorted so that every cluster
//!    stays contiguous in every rank (and side outputs stay to the right);
//! 4. x by repeatedly pulling each vertex towards the mean of its neighbours, keeping
//!    the order and the gaps (a least-squares fit solved by pool-adjacent-violators);
//! 5. y by rank, each gap tall enough for the cluster titles and paddings in it.
//!
//! Geometry only: what the boxes say and how they look is the writers' business.

use std::collections::HashMap;

/// Horizontal gap between neighbouring boxes.
pub const NODE_GAP: f64 = 18.0;
/// Room between a cluster's border and what it holds.
pub const CLUSTER_PAD: f64 = 10.0;
/// Room for a cluster's title above its contents.
pub const TITLE_HEIGHT: f64 = 16.0;
/// Vertical gap between ranks, beyond titles and paddings: room for edge labels.
pub const RANK_GAP: f64 = 30.0;
/// How far side outputs stand from the main network.
pub const SIDE_GAP: f64 = 60.0;
pub const MARGIN: f64 = 12.0;
/// Width reserved for an edge passing through a rank.
const DUMMY_WIDTH: f64 = 6.0;
const ORDER_SWEEPS: usize = 6;
const PLACEMENT_SWEEPS: usize = 6;
/// Rounds of widening gaps where a cluster's box would cover a box beside it.
const CLUSTER_ROUNDS: usize = 12;

/// One box to place.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub width: f64,
    pub height: f64,
    /// The clusters that hold it, outermost first.
    pub clusters: Vec<usize>,
    /// Side outputs are kept to the right of everything else.
    pub side: bool,
}

/// What to lay out. Items must be in topological order: an edge `(from, to)` with
/// `from >= to` (or out of range) is left out of the layout and gets an empty path.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LayoutInput {
    pub items: Vec<Item>,
    pub edges: Vec<(usize, usize)>,
    pub cluster_count: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Rect {
    pub fn right(&self) -> f64 {
        self.x + self.width
    }

    pub fn bottom(&self) -> f64 {
        self.y + self.height
    }

    pub fn center_x(&self) -> f64 {
        self.x + self.width / 2.0
    }

    fn union(self, other: Rect) -> Rect {
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        Rect {
            x,
            y,
            width: self.right().max(other.right()) - x,
            height: self.bottom().max(other.bottom()) - y,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    /// One per item.
    pub nodes: Vec<Rect>,
    pub ranks: Vec<usize>,
    /// One polyline per edge, from the bottom of its source to the top of its target.
    pub edges: Vec<Vec<(f64, f64)>>,
    /// One per cluster; `None` for a cluster that holds nothing.
    pub clusters: Vec<Option<Rect>>,
    /// Where the label of an item's output tensor goes: just below the item's rank.
    pub label_anchors: Vec<(f64, f64)>,
    pub width: f64,
    pub height: f64,
}

/// A box or a dummy (an edge passing through a rank).
#[derive(Debug, Clone)]
struct Vertex {
    rank: usize,
    width: f64,
    height: f64,
    clusters: Vec<usize>,
    side: bool,
    preds: Vec<usize>,
    succs: Vec<usize>,
}

struct Layered {
    vertices: Vec<Vertex>,
    /// The vertices each input edge runs through, source and target included.
    chains: Vec<Vec<usize>>,
    /// Per cluster, the first and last rank of its items.
    spans: Vec<Option<(usize, usize)>>,
    /// Per rank, its vertices left to right.
    order: Vec<Vec<usize>>,
}

pub fn layout(input: &LayoutInput) -> Layout {
    let mut layered = Layered::new(input);
    layered.reduce_crossings();
    let xs = layered.place_horizontally();
    layered.assemble(input, &xs)
}

fn is_valid(edge: (usize, usize), count: usize) -> bool {
    edge.0 < edge.1 && edge.1 < count
}

/// Longest path from the sources: each item one rank below its lowest input.
fn assign_ranks(input: &LayoutInput) -> Vec<usize> {
    let count = input.items.len();
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); count];
    for &(from, to) in &input.edges {
        if is_valid((from, to), count) {
            preds[to].push(from);
        }
    }
    let mut ranks = vec![0; count];
    for to in 0..count {
        ranks[to] = preds[to].iter().map(|&p| ranks[p] + 1).max().unwrap_or(0);
    }
    ranks
}

fn cluster_spans(input: &LayoutInput, ranks: &[usize]) -> Vec<Option<(usize, usize)>> {
    let mut spans: Vec<Option<(usize, usize)>> = vec![None; input.cluster_count];
    for (item, &rank) in input.items.iter().zip(ranks) {
        for &c in &item.clusters {
            if let Some(span) = spans.get_mut(c) {
                *span = Some(span.map_or((rank, rank), |(lo, hi)| (lo.min(rank), hi.max(rank))));
            }
        }
    }
    spans
}

impl Layered {
    fn new(input: &LayoutInput) -> Layered {
        let ranks = assign_ranks(input);
        let spans = cluster_spans(input, &ranks);
        let mut vertices: Vec<Vertex> = input
            .items
            .iter()
            .zip(&ranks)
            .map(|(item, &rank)| Vertex {
                rank,
                width: item.width.max(0.0),
                height: item.height.max(0.0),
                clusters: item.clusters.clone(),
                side: item.side,
                preds: Vec::new(),
                succs: Vec::new(),
            })
            .collect();
        let mut chains = Vec::with_capacity(input.edges.len());
        for &(from, to) in &input.edges {
            if !is_valid((from, to), input.items.len()) {
                chains.push(Vec::new());
                continue;
            }
            let mut chain = vec![from];
            for rank in ranks[from] + 1..ranks[to] {
                chain.push(vertices.len());
                vertices.push(dummy(&vertices, &spans, from, to, rank));
            }
            chain.push(to);
            for pair in chain.windows(2) {
                vertices[pair[0]].succs.push(pair[1]);
                vertices[pair[1]].preds.push(pair[0]);
            }
            chains.push(chain);
        }
        let rank_count = ranks.iter().max().map_or(0, |r| r + 1);
        let mut order = vec![Vec::new(); rank_count];
        for (v, vertex) in vertices.iter().enumerate() {
            order[vertex.rank].push(v);
        }
        Layered {
            vertices,
            chains,
            spans,
            order,
        }
    }

    fn reduce_crossings(&mut self) {
        // Start from the items' own order (the source's order, which reads well); a
        // dummy starts next to the source of its edge.
        let mut value: Vec<f64> = (0..self.vertices.len()).map(|v| v as f64).collect();
        for chain in &self.chains {
            for &d in chain.iter().skip(1).take(chain.len().saturating_sub(2)) {
                value[d] = chain[0] as f64 + 0.5;
            }
        }
        for rank in 0..self.order.len() {
            self.sort_rank(rank, &value);
        }
        // Sweeps can make things worse as well as better: keep the best order seen,
        // preferring the first (the source's) on ties.
        let mut best = (self.crossings(), self.order.clone());
        let mut position = self.positions();
        for _ in 0..ORDER_SWEEPS {
            for rank in 1..self.order.len() {
                self.barycenters(rank, true, &mut position);
                self.sort_rank(rank, &position);
                self.update_positions(rank, &mut position);
            }
            for rank in (0..self.order.len().saturating_sub(1)).rev() {
                self.barycenters(rank, false, &mut position);
                self.sort_rank(rank, &position);
                self.update_positions(rank, &mut position);
            }
            let crossings = self.crossings();
            if crossings < best.0 {
                best = (crossings, self.order.clone());
            }
        }
        self.order = best.1;
    }

    /// Each vertex's index within its rank.
    fn positions(&self) -> Vec<f64> {
        let mut position = vec![0.0; self.vertices.len()];
        for rank in 0..self.order.len() {
            self.update_positions(rank, &mut position);
        }
        position
    }

    fn update_positions(&self, rank: usize, position: &mut [f64]) {
        for (i, &v) in self.order[rank].iter().enumerate() {
            position[v] = i as f64;
        }
    }

    /// How many pairs of edge segments cross, over all pairs of neighbouring ranks.
    fn crossings(&self) -> usize {
        let position = self.positions();
        let mut total = 0;
        for rank_order in &self.order {
            let segments: Vec<(f64, f64)> = rank_order
                .iter()
                .flat_map(|&u| self.vertices[u].succs.iter().map(move |&v| (u, v)))
                .map(|(u, v)| (position[u], position[v]))
                .collect();
            for (i, a) in segments.iter().enumerate() {
                total += segments[i + 1..]
                    .iter()
                    .filter(|b| (a.0 < b.0 && a.1 > b.1) || (a.0 > b.0 && a.1 < b.1))
                    .count();
            }
        }
        total
    }

    /// Replaces the positions of a rank's vertices by their mean position among their
    /// neighbours in the rank above (`down`) or below; a vertex without any keeps its
    /// own. The neighbours' rank is untouched, so this is safe in place.
    fn barycenters(&self, rank: usize, down: bool, position: &mut [f64]) {
        for &v in &self.order[rank] {
            let vertex = &self.vertices[v];
            let neighbours = if down { &vertex.preds } else { &vertex.succs };
            if !neighbours.is_empty() {
                let sum: f64 = neighbours.iter().map(|&n| position[n]).sum();
                position[v] = sum / neighbours.len() as f64;
            }
        }
    }

    /// Sorts a rank by `value`, keeping every cluster contiguous: at each nesting level
    /// a cluster sorts as one unit, by the mean value of its vertices in this rank.
    fn sort_rank(&mut self, rank: usize, value: &[f64]) {
        let mut sums: HashMap<usize, (f64, usize)> = HashMap::new();
        for &v in &self.order[rank] {
            for &c in &self.vertices[v].clusters {
                let entry = sums.entry(c).or_insert((0.0, 0));
                entry.0 += value[v];
                entry.1 += 1;
            }
        }
        let cluster_mean = |c: usize| sums.get(&c).map_or(0.0, |&(s, n)| s / n as f64);
        let offset = self.spans.len();
        let key = |v: usize| -> Vec<(f64, usize)> {
            let vertex = &self.vertices[v];
            let mut key = vec![(if vertex.side { 1.0 } else { 0.0 }, 0)];
            key.extend(vertex.clusters.iter().map(|&c| (cluster_mean(c), c)));
            key.push((value[v], offset + v));
            key
        };
        let mut keyed: Vec<(Vec<(f64, usize)>, usize)> =
            self.order[rank].iter().map(|&v| (key(v), v)).collect();
        keyed.sort_by(|a, b| compare_keys(&a.0, &b.0));
        self.order[rank] = keyed.into_iter().map(|(_, v)| v).collect();
    }

    /// The least distance between the centres of two neighbours in a rank.
    fn separation(&self, a: usize, b: usize) -> f64 {
        let (va, vb) = (&self.vertices[a], &self.vertices[b]);
        let common = common_prefix(&va.clusters, &vb.clusters);
        let borders = (va.clusters.len() - common) + (vb.clusters.len() - common);
        let side = if va.side != vb.side { SIDE_GAP } else { 0.0 };
        (va.width + vb.width) / 2.0 + NODE_GAP + CLUSTER_PAD * borders as f64 + side
    }

    /// x of every vertex. Placing by neighbours alone can let a block's box, which
    /// spans several ranks, reach over a box beside it in one rank; such pairs get a
    /// wider gap and the placement is redone, a few rounds at most.
    fn place_horizontally(&self) -> Vec<f64> {
        let mut extra: HashMap<(usize, usize), f64> = HashMap::new();
        let mut xs = self.place_with(&extra);
        for _ in 0..CLUSTER_ROUNDS {
            let violations = self.cluster_violations(&xs);
            if violations.is_empty() {
                break;
            }
            for (pair, need) in violations {
                *extra.entry(pair).or_insert(0.0) += need;
            }
            xs = self.place_with(&extra);
        }
        self.move_side_outputs_apart(&mut xs);
        xs
    }

    /// Neighbours `(a, b)` in a rank that stand too close for the boxes of the clusters
    /// one holds and the other doesn't, and how much more room they need.
    fn cluster_violations(&self, xs: &[f64]) -> Vec<((usize, usize), f64)> {
        let extents = self.cluster_extents(xs);
        let mut violations = Vec::new();
        for rank_order in &self.order {
            for pair in rank_order.windows(2) {
                let (a, b) = (&self.vertices[pair[0]], &self.vertices[pair[1]]);
                let common = common_prefix(&a.clusters, &b.clusters);
                let a_right =
                    xs[pair[0]] + a.width / 2.0 + CLUSTER_PAD * (a.clusters.len() - common) as f64;
                let b_left =
                    xs[pair[1]] - b.width / 2.0 - CLUSTER_PAD * (b.clusters.len() - common) as f64;
                let mut need: f64 = 0.0;
                for c in &a.clusters[common..] {
                    need = need.max(extents[c].1 + NODE_GAP - b_left);
                }
                for c in &b.clusters[common..] {
                    need = need.max(a_right + NODE_GAP - extents[c].0);
                }
                if need > 0.5 {
                    violations.push(((pair[0], pair[1]), need));
                }
            }
        }
        violations
    }

    /// Each cluster's left and right edge, as its box will be drawn.
    fn cluster_extents(&self, xs: &[f64]) -> HashMap<usize, (f64, f64)> {
        let mut extents: HashMap<usize, (f64, f64)> = HashMap::new();
        for (v, vertex) in self.vertices.iter().enumerate() {
            let depth = vertex.clusters.len();
            for (level, &c) in vertex.clusters.iter().enumerate() {
                let reach = vertex.width / 2.0 + CLUSTER_PAD * (depth - level) as f64;
                let extent = extents
                    .entry(c)
                    .or_insert((f64::INFINITY, f64::NEG_INFINITY));
                extent.0 = extent.0.min(xs[v] - reach);
                extent.1 = extent.1.max(xs[v] + reach);
            }
        }
        extents
    }

    fn place_with(&self, extra: &HashMap<(usize, usize), f64>) -> Vec<f64> {
        let mut xs = vec![0.0; self.vertices.len()];
        for rank in 0..self.order.len() {
            let packed: Vec<f64> = vec![0.0; self.order[rank].len()];
            self.place_rank(rank, &packed, extra, &mut xs);
        }
        for sweep in 0..=PLACEMENT_SWEEPS {
            // End on a downward sweep: the network then hangs from its input.
            let down = sweep % 2 == 0;
            let ranks: Vec<usize> = if down {
                (1..self.order.len()).collect()
            } else {
                (0..self.order.len().saturating_sub(1)).rev().collect()
            };
            for rank in ranks {
                let desired = self.desired(rank, down, &xs);
                self.place_rank(rank, &desired, extra, &mut xs);
            }
        }
        xs
    }

    /// Where each vertex of a rank would like to be: above (or below) the mean of its
    /// neighbours there. Side outputs and the main network don't pull on each other, so
    /// each side output hangs in a column of its own.
    fn desired(&self, rank: usize, down: bool, xs: &[f64]) -> Vec<f64> {
        self.order[rank]
            .iter()
            .map(|&v| {
                let vertex = &self.vertices[v];
                let all = if down { &vertex.preds } else { &vertex.succs };
                let (sum, count) = all
                    .iter()
                    .filter(|&&n| self.vertices[n].side == vertex.side)
                    .fold((0.0, 0), |(s, c), &n| (s + xs[n], c + 1));
                if count == 0 {
                    xs[v]
                } else {
                    sum / count as f64
                }
            })
            .collect()
    }

    fn place_rank(
        &self,
        rank: usize,
        desired: &[f64],
        extra: &HashMap<(usize, usize), f64>,
        xs: &mut [f64],
    ) {
        let order = &self.order[rank];
        let gaps: Vec<f64> = order
            .windows(2)
            .map(|p| self.separation(p[0], p[1]) + extra.get(&(p[0], p[1])).unwrap_or(&0.0))
            .collect();
        for (&v, x) in order.iter().zip(fit_in_order(desired, &gaps)) {
            xs[v] = x;
        }
    }

    /// Shifts every side output right of the main network's rightmost extent, so the
    /// auxiliary classifiers read as a separate column.
    fn move_side_outputs_apart(&self, xs: &mut [f64]) {
        let reach = |v: usize, sign: f64| {
            let vertex = &self.vertices[v];
            xs[v] + sign * (vertex.width / 2.0 + CLUSTER_PAD * vertex.clusters.len() as f64)
        };
        let main_right = (0..xs.len())
            .filter(|&v| !self.vertices[v].side)
            .map(|v| reach(v, 1.0))
            .fold(f64::NEG_INFINITY, f64::max);
        let side_left = (0..xs.len())
            .filter(|&v| self.vertices[v].side)
            .map(|v| reach(v, -1.0))
            .fold(f64::INFINITY, f64::min);
        if main_right.is_finite() && side_left.is_finite() {
            let shift = main_right + SIDE_GAP - side_left;
            for (v, x) in xs.iter_mut().enumerate() {
                if self.vertices[v].side {
                    *x += shift;
                }
            }
        }
    }
}

fn dummy(
    vertices: &[Vertex],
    spans: &[Option<(usize, usize)>],
    from: usize,
    to: usize,
    rank: usize,
) -> Vertex {
    // The dummy belongs to the target's clusters that already span this rank, so a
    // skip connection runs inside its block's box but never stretches a box upwards.
    let clusters = vertices[to]
        .clusters
        .iter()
        .copied()
        .take_while(|&c| {
            spans
                .get(c)
                .copied()
                .flatten()
                .is_some_and(|(lo, hi)| lo <= rank && rank <= hi)
        })
        .collect();
    Vertex {
        rank,
        width: DUMMY_WIDTH,
        height: 0.0,
        clusters,
        side: vertices[from].side || vertices[to].side,
        preds: Vec::new(),
        succs: Vec::new(),
    }
}

fn common_prefix(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn compare_keys(a: &[(f64, usize)], b: &[(f64, usize)]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let ordering = x.0.total_cmp(&y.0).then(x.1.cmp(&y.1));
        if ordering.is_ne() {
            return ordering;
        }
    }
    a.len().cmp(&b.len())
}

/// Positions as close as possible (least squares) to `desired` while keeping the order
/// and at least `gaps[i]` between neighbours `i` and `i + 1`. Subtracting the cumulative
/// gaps turns this into isotonic regression, which pool-adjacent-violators solves
/// exactly in linear time.
pub fn fit_in_order(desired: &[f64], gaps: &[f64]) -> Vec<f64> {
    let mut offsets = Vec::with_capacity(desired.len());
    let mut total = 0.0;
    for i in 0..desired.len() {
        offsets.push(total);
        total += gaps.get(i).copied().unwrap_or(0.0);
    }
    // Blocks of (sum, count) whose means must not decrease.
    let mut blocks: Vec<(f64, usize)> = Vec::new();
    for (d, o) in desired.iter().zip(&offsets) {
        blocks.push((d - o, 1));
        while blocks.len() > 1 {
            let (s2, n2) = blocks[blocks.len() - 1];
            let (s1, n1) = blocks[blocks.len() - 2];
            if s1 / n1 as f64 <= s2 / n2 as f64 {
                break;
            }
            blocks.pop();
            if let Some(last) = blocks.last_mut() {
                *last = (s1 + s2, n1 + n2);
            }
        }
    }
    let mut out = Vec::with_capacity(desired.len());
    for (sum, count) in blocks {
        out.extend(std::iter::repeat_n(sum / count as f64, count));
    }
    out.iter().zip(&offsets).map(|(y, o)| y + o).collect()
}

/// Vertical placement: each rank's top, and its height.
struct Rows {
    top: Vec<f64>,
    height: Vec<f64>,
    /// How many cluster borders close below each rank.
    closing: Vec<usize>,
}

impl Layered {
    fn rows(&self) -> Rows {
        let count = self.order.len();
        let levels = |rank: usize, pick: fn((usize, usize)) -> usize| {
            self.order[rank]
                .iter()
                .map(|&v| {
                    let clusters = &self.vertices[v].clusters;
                    clusters
                        .iter()
                        .filter(|&&c| self.spans.get(c).copied().flatten().map(pick) == Some(rank))
                        .count()
                })
                .max()
                .unwrap_or(0)
        };
        let opening: Vec<usize> = (0..count).map(|r| levels(r, |s| s.0)).collect();
        let closing: Vec<usize> = (0..count).map(|r| levels(r, |s| s.1)).collect();
        let height: Vec<f64> = self
            .order
            .iter()
            .map(|vs| {
                vs.iter()
                    .map(|&v| self.vertices[v].height)
                    .fold(0.0, f64::max)
            })
            .collect();
        let mut top = Vec::with_capacity(count);
        let mut y = MARGIN;
        for rank in 0..count {
            if rank > 0 {
                y += height[rank - 1] + closing[rank - 1] as f64 * CLUSTER_PAD + RANK_GAP;
            }
            y += opening[rank] as f64 * (TITLE_HEIGHT + CLUSTER_PAD);
            top.push(y);
        }
        Rows {
            top,
            height,
            closing,
        }
    }

    fn assemble(&self, input: &LayoutInput, xs: &[f64]) -> Layout {
        let rows = self.rows();
        let left = (0..self.vertices.len())
            .map(|v| {
                let vertex = &self.vertices[v];
                xs[v] - vertex.width / 2.0 - CLUSTER_PAD * vertex.clusters.len() as f64
            })
            .fold(f64::INFINITY, f64::min);
        let shift = if left.is_finite() { MARGIN - left } else { 0.0 };
        let rect = |v: usize| {
            let vertex = &self.vertices[v];
            let rank = vertex.rank;
            Rect {
                x: xs[v] + shift - vertex.width / 2.0,
                y: rows.top[rank] + (rows.height[rank] - vertex.height) / 2.0,
                width: vertex.width,
                height: vertex.height,
            }
        };
        let nodes: Vec<Rect> = (0..input.items.len()).map(rect).collect();
        let edges = self
            .chains
            .iter()
            .map(|c| self.route(c, &nodes, &rows, xs, shift))
            .collect();
        let clusters = self.cluster_boxes(input.cluster_count, &rows, xs, shift);
        let label_anchors = (0..input.items.len())
            .map(|v| {
                let rank = self.vertices[v].rank;
                let below =
                    rows.top[rank] + rows.height[rank] + rows.closing[rank] as f64 * CLUSTER_PAD;
                (nodes[v].center_x() + 5.0, below + 13.0)
            })
            .collect();
        let mut width: f64 = 0.0;
        let mut height: f64 = 0.0;
        for r in nodes.iter().chain(clusters.iter().flatten()) {
            width = width.max(r.right());
            height = height.max(r.bottom());
        }
        Layout {
            nodes,
            ranks: self.vertices[..input.items.len()]
                .iter()
                .map(|v| v.rank)
                .collect(),
            edges,
            clusters,
            label_anchors,
            width: width + MARGIN + 80.0,
            height: height + MARGIN + 20.0,
        }
    }

    /// The polyline of one edge: out of the source's bottom, straight down through each
    /// rank it crosses, into the target's top.
    fn route(
        &self,
        chain: &[usize],
        nodes: &[Rect],
        rows: &Rows,
        xs: &[f64],
        shift: f64,
    ) -> Vec<(f64, f64)> {
        let (Some(&from), Some(&to)) = (chain.first(), chain.last()) else {
            return Vec::new();
        };
        let mut points = vec![(nodes[from].center_x(), nodes[from].bottom())];
        for &d in &chain[1..chain.len() - 1] {
            let rank = self.vertices[d].rank;
            let x = xs[d] + shift;
            points.push((x, rows.top[rank]));
            points.push((x, rows.top[rank] + rows.height[rank]));
        }
        points.push((nodes[to].center_x(), nodes[to].y));
        points
    }

    /// Each cluster's box: around its vertices (dummies included), one padding (and, on
    /// top, one title) per nesting level between the cluster and the vertex.
    fn cluster_boxes(
        &self,
        count: usize,
        rows: &Rows,
        xs: &[f64],
        shift: f64,
    ) -> Vec<Option<Rect>> {
        let mut boxes: Vec<Option<Rect>> = vec![None; count];
        for (v, vertex) in self.vertices.iter().enumerate() {
            let depth = vertex.clusters.len();
            let rank = vertex.rank;
            let inner = Rect {
                x: xs[v] + shift - vertex.width / 2.0,
                y: rows.top[rank],
                width: vertex.width,
                height: rows.height[rank],
            };
            for (level, &c) in vertex.clusters.iter().enumerate() {
                let around = (depth - level) as f64;
                let outer = Rect {
                    x: inner.x - around * CLUSTER_PAD,
                    y: inner.y - around * (CLUSTER_PAD + TITLE_HEIGHT),
                    width: inner.width + 2.0 * around * CLUSTER_PAD,
                    height: inner.height + around * (2.0 * CLUSTER_PAD + TITLE_HEIGHT),
                };
                if let Some(slot) = boxes.get_mut(c) {
                    *slot = Some(slot.map_or(outer, |b| b.union(outer)));
                }
            }
        }
        boxes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(width: f64, clusters: Vec<usize>, side: bool) -> Item {
        Item {
            width,
            height: 30.0,
            clusters,
            side,
        }
    }

    /// input → two branches in clusters 0 (→ nested 1) and 2 → join, a long skip from
    /// the input to the join, and a side output hanging off the input.
    fn branching() -> LayoutInput {
        LayoutInput {
            items: vec![
                item(60.0, vec![], false),     // 0 input
                item(80.0, vec![0], false),    // 1 branch a, first
                item(80.0, vec![0, 1], false), // 2 branch a, nested
                item(120.0, vec![2], false),   // 3 branch b
                item(60.0, vec![], false),     // 4 join
                item(70.0, vec![3], true),     // 5 side output
                item(70.0, vec![3], true),     // 6 side output
            ],
            edges: vec![
                (0, 1),
                (1, 2),
                (0, 3),
                (2, 4),
                (3, 4),
                (0, 4),
                (0, 5),
                (5, 6),
            ],
            cluster_count: 4,
        }
    }

    fn overlaps(a: &Rect, b: &Rect) -> bool {
        a.x < b.right() && b.x < a.right() && a.y < b.bottom() && b.y < a.bottom()
    }

    fn contains(outer: &Rect, inner: &Rect) -> bool {
        outer.x <= inner.x
            && outer.y <= inner.y
            && inner.right() <= outer.right()
            && inner.bottom() <= outer.bottom()
    }

    #[test]
    fn ranks_follow_the_longest_path() {
        let layout = layout(&branching());
        assert_eq!(layout.ranks, vec![0, 1, 2, 1, 3, 1, 2]);
    }

    #[test]
    fn boxes_do_not_overlap_and_edges_go_down() {
        let layout = layout(&branching());
        for (i, a) in layout.nodes.iter().enumerate() {
            for b in &layout.nodes[i + 1..] {
                assert!(!overlaps(a, b), "{a:?} overlaps {b:?}");
            }
        }
        for path in &layout.edges {
            assert!(path.len() >= 2);
            assert!(path.windows(2).all(|p| p[1].1 >= p[0].1), "{path:?}");
            assert!(path[path.len() - 1].1 > path[0].1);
        }
        // The skip from the input to the join passes through two ranks.
        assert_eq!(layout.edges[5].len(), 2 + 2 * 2);
    }

    #[test]
    fn clusters_hold_their_boxes_and_nest() {
        let layout = layout(&branching());
        let input = branching();
        for (item, rect) in input.items.iter().zip(&layout.nodes) {
            for &c in &item.clusters {
                let cluster = layout.clusters[c].expect("cluster placed");
                assert!(contains(&cluster, rect), "{cluster:?} misses {rect:?}");
            }
        }
        let (outer, inner) = (layout.clusters[0].unwrap(), layout.clusters[1].unwrap());
        assert!(contains(&outer, &inner) && outer != inner);
        let (a, b) = (layout.clusters[0].unwrap(), layout.clusters[2].unwrap());
        assert!(
            !overlaps(&a, &b),
            "sibling clusters {a:?} and {b:?} overlap"
        );
    }

    #[test]
    fn side_outputs_stand_right_of_the_network() {
        let layout = layout(&branching());
        let main_right = layout.nodes[..5]
            .iter()
            .map(Rect::right)
            .fold(0.0, f64::max);
        let side = layout.clusters[3].unwrap();
        assert!(side.x >= main_right + SIDE_GAP - CLUSTER_PAD);
    }

    #[test]
    fn edges_against_the_order_are_left_out() {
        let input = LayoutInput {
            items: vec![item(50.0, vec![], false), item(50.0, vec![], false)],
            edges: vec![(1, 0), (0, 0), (0, 7), (0, 1)],
            cluster_count: 1,
        };
        let layout = layout(&input);
        assert_eq!(layout.ranks, vec![0, 1]);
        assert!(layout.edges[..3].iter().all(Vec::is_empty));
        assert_eq!(layout.edges[3].len(), 2);
        assert_eq!(layout.clusters, vec![None]);
        assert_eq!(super::layout(&LayoutInput::default()).nodes, vec![]);
    }

    /// Cluster paths of a small tree: 0 ⊃ 1, 0 ⊃ 4, 2 ⊃ 3.
    const PATHS: [&[usize]; 6] = [&[], &[0], &[0, 1], &[2], &[2, 3], &[0, 4]];

    fn random_input() -> impl Strategy<Value = LayoutInput> {
        (1usize..40)
            .prop_flat_map(|n| {
                let items =
                    proptest::collection::vec((20.0f64..200.0, 0..PATHS.len(), any::<bool>()), n);
                let edges = proptest::collection::vec((0..n, 0..n), 0..n * 2);
                (items, edges)
            })
            .prop_map(|(items, edges)| LayoutInput {
                items: items
                    .into_iter()
                    .map(|(width, path, side)| item(width, PATHS[path].to_vec(), side))
                    .collect(),
                edges,
                cluster_count: 5,
            })
    }

    proptest::proptest! {
        #[test]
        fn any_dag_lays_out_cleanly(input in random_input()) {
            let layout = layout(&input);
            for (i, a) in layout.nodes.iter().enumerate() {
                prop_assert!(a.x.is_finite() && a.y.is_finite());
                for b in &layout.nodes[i + 1..] {
                    prop_assert!(!overlaps(a, b), "{:?} overlaps {:?}", a, b);
                }
            }
            for (&(from, to), path) in input.edges.iter().zip(&layout.edges) {
                if from < to {
                    prop_assert!(layout.ranks[from] < layout.ranks[to]);
                    prop_assert!(path.windows(2).all(|p| p[1].1 >= p[0].1));
                } else {
                    prop_assert!(path.is_empty());
                }
            }
            for (item, rect) in input.items.iter().zip(&layout.nodes) {
                for &c in &item.clusters {
                    let cluster = layout.clusters[c].expect("cluster placed");
                    prop_assert!(contains(&cluster, rect));
                }
            }
        }
    }

    #[test]
    fn fitting_in_order_keeps_gaps_and_is_exact_when_it_can_be() {
        assert_eq!(fit_in_order(&[0.0, 100.0], &[10.0]), vec![0.0, 100.0]);
        assert_eq!(
            fit_in_order(&[0.0, 0.0, 0.0], &[10.0, 10.0]),
            vec![-10.0, 0.0, 10.0]
        );
        let xs = fit_in_order(&[5.0, 0.0, 50.0, 49.0], &[20.0, 20.0, 20.0]);
        assert!(xs.windows(2).all(|p| p[1] - p[0] >= 20.0 - 1e-9), "{xs:?}");
    }
}
