//! The k-way merge of the stores' sorted answers into groups of series equal in labels.

use super::*;

/// Heap entry of the k-way merge: the next series of one store's list.
pub(super) struct Head {
    pub(super) labels: Labels,
    pub(super) list: usize,
    pub(super) series: pb::Series,
}

impl PartialEq for Head {
    fn eq(&self, other: &Head) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Head) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    /// Reversed, so the max-heap pops the smallest labels (then the lowest list) first.
    fn cmp(&self, other: &Head) -> Ordering {
        other
            .labels
            .cmp(&self.labels)
            .then(other.list.cmp(&self.list))
    }
}

/// Merges sorted lists into groups of equal labels, in label order.
pub(super) fn merge_sorted(lists: Vec<StoreSeries>) -> Vec<Group> {
    let mut iters: Vec<std::vec::IntoIter<(Labels, pb::Series)>> =
        lists.into_iter().map(Vec::into_iter).collect();
    let mut heap = BinaryHeap::with_capacity(iters.len());
    for (list, it) in iters.iter_mut().enumerate() {
        if let Some((labels, series)) = it.next() {
            heap.push(Head {
                labels,
                list,
                series,
            });
        }
    }
    let mut groups: Vec<Group> = Vec::new();
    while let Some(Head {
        labels,
        list,
        series,
    }) = heap.pop()
    {
        if let Some((l, s)) = iters[list].next() {
            heap.push(Head {
                labels: l,
                list,
                series: s,
            });
        }
        match groups.last_mut() {
            Some(g) if g.labels == labels => g.members.push(series),
            _ => groups.push(Group {
                labels,
                members: vec![series],
            }),
        }
    }
    groups
}
