//! Batching, apart from the tasks that do it: which waiting requests share one log entry (the
//! proposer) or one leadership check (the read index). Pure: the tasks hand in what is waiting
//! and carry out the decision.

/// One batch: `first`, then what `next` yields while the batch stays within `count_max` items
/// and `bytes_max` bytes as `bytes_of` counts them. A lone item larger than `bytes_max` still
/// goes, alone. Returns the batch and the item that did not fit, which starts the next one.
pub fn gather<T>(
    first: T,
    mut next: impl FnMut() -> Option<T>,
    count_max: usize,
    bytes_max: usize,
    bytes_of: impl Fn(&T) -> usize,
) -> (Vec<T>, Option<T>) {
    let mut bytes = bytes_of(&first);
    let mut batch = vec![first];
    while batch.len() < count_max {
        let Some(item) = next() else { break };
        let item_bytes = bytes_of(&item);
        if bytes + item_bytes > bytes_max {
            return (batch, Some(item));
        }
        bytes += item_bytes;
        batch.push(item);
    }
    (batch, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gathers from `waiting` (sizes), as the proposer does from its queue.
    fn batch(
        waiting: &mut Vec<usize>,
        count_max: usize,
        bytes_max: usize,
    ) -> (Vec<usize>, Option<usize>) {
        waiting.reverse();
        let first = waiting.pop().expect("something waits");
        let gathered = gather(first, || waiting.pop(), count_max, bytes_max, |size| *size);
        waiting.reverse();
        gathered
    }

    #[test]
    fn everything_waiting_goes_in_one_batch_within_the_limits() {
        let mut waiting = vec![1, 2, 3];
        assert_eq!(batch(&mut waiting, 10, 100), (vec![1, 2, 3], None));
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_batch_stops_at_its_count_and_leaves_the_rest_waiting() {
        let mut waiting = vec![1, 1, 1, 1, 1];
        assert_eq!(batch(&mut waiting, 2, 100), (vec![1, 1], None));
        assert_eq!(waiting, [1, 1, 1], "not taken: they wait for the next batch");
    }

    #[test]
    fn the_item_past_the_byte_limit_starts_the_next_batch() {
        let mut waiting = vec![40, 40, 40, 5];
        assert_eq!(batch(&mut waiting, 10, 100), (vec![40, 40], Some(40)));
        assert_eq!(waiting, [5]);
    }

    #[test]
    fn a_lone_item_over_the_byte_limit_still_goes_alone() {
        let mut waiting = vec![500, 1];
        assert_eq!(batch(&mut waiting, 10, 100), (vec![500], Some(1)));
    }
}
