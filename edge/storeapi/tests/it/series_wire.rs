//! The hand-written `Series`, `SeriesBatch` and `SeriesResponse` (`meridian_storeapi::wire`) against
//! what prost derives from `rpc.proto`: the same bytes out, the same messages in, for any labels and
//! chunks, and clear errors on damaged input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use meridian_core::labels::Labels;
use meridian_storeapi::proto::thanos as pb;
use proptest::prelude::*;
use prost::Message;

/// `thanos.Series` as prost derives it from `rpc.proto` (a `String` per name and value).
#[derive(Clone, PartialEq, prost::Message)]
struct RefSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<pb::Label>,
    #[prost(message, repeated, tag = "2")]
    chunks: Vec<pb::AggrChunk>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RefBatch {
    #[prost(message, repeated, tag = "1")]
    series: Vec<RefSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RefResponse {
    #[prost(oneof = "RefResult", tags = "1, 2, 3, 4")]
    result: Option<RefResult>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum RefResult {
    #[prost(message, tag = "1")]
    Series(RefSeries),
    #[prost(string, tag = "2")]
    Warning(String),
    #[prost(message, tag = "3")]
    Hints(prost_types::Any),
    #[prost(message, tag = "4")]
    Batch(RefBatch),
}

fn chunk(min: i64, data: &[u8]) -> pb::AggrChunk {
    pb::AggrChunk {
        min_time: min,
        max_time: min + 100,
        raw: Some(pb::Chunk {
            r#type: 0,
            data: Bytes::copy_from_slice(data),
            hash: 7,
        }),
        ..Default::default()
    }
}

fn ref_series(pairs: &[(String, String)], chunks: &[pb::AggrChunk]) -> RefSeries {
    RefSeries {
        labels: pairs
            .iter()
            .map(|(n, v)| pb::Label {
                name: n.clone(),
                value: v.clone(),
            })
            .collect(),
        chunks: chunks.to_vec(),
    }
}

fn labels(pairs: &[(String, String)]) -> Labels {
    Labels::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
}

proptest! {
    /// A label set encodes to the bytes prost writes for the same labels (sorted, no empty values:
    /// what a `Labels` holds), and any prost-written series, labels in any order, empty values and
    /// repeated names included, decodes to what `labels_from_proto` made of it.
    #[test]
    fn matches_prost(
        pairs in proptest::collection::vec(("[a-c_é]{0,3}", "[a-c\u{263a}]{0,3}"), 0..8),
        n_chunks in 0usize..3,
        batch in any::<bool>(),
    ) {
        let chunks: Vec<pb::AggrChunk> = (0..n_chunks).map(|i| chunk(i as i64 * 1000, b"\x00\x01ab")).collect();
        let want = labels(&pairs);

        // Decoding anything prost writes.
        let reference = ref_series(&pairs, &chunks);
        let decoded = pb::Series::decode(reference.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(&decoded.labels, &want);
        prop_assert_eq!(&decoded.labels, &meridian_storeapi::labels_from_proto(&reference.labels));
        prop_assert_eq!(&decoded.chunks, &chunks);

        // Encoding: the bytes of prost's message for the label set's own (sorted, non-empty) labels.
        let canonical: Vec<(String, String)> =
            want.iter().map(|l| (l.name.to_owned(), l.value.to_owned())).collect();
        let ours = pb::Series { labels: want.clone(), chunks: chunks.clone() };
        let theirs = ref_series(&canonical, &chunks);
        prop_assert_eq!(ours.encode_to_vec(), theirs.encode_to_vec());
        prop_assert_eq!(ours.encoded_len(), theirs.encoded_len());

        // The containers, both directions.
        let (ours, theirs) = if batch {
            (
                pb::SeriesResponse { result: Some(pb::series_response::Result::Batch(pb::SeriesBatch { series: vec![ours.clone(), ours] })) },
                RefResponse { result: Some(RefResult::Batch(RefBatch { series: vec![theirs.clone(), theirs] })) },
            )
        } else {
            (
                pb::SeriesResponse { result: Some(pb::series_response::Result::Series(ours)) },
                RefResponse { result: Some(RefResult::Series(theirs)) },
            )
        };
        prop_assert_eq!(ours.encode_to_vec(), theirs.encode_to_vec());
        prop_assert_eq!(ours.encoded_len(), theirs.encoded_len());
        // `encode` (what tonic calls) measures a batch's series once; same bytes.
        let mut direct = Vec::new();
        ours.encode(&mut direct).unwrap();
        prop_assert_eq!(&direct, &theirs.encode_to_vec());
        // Too little room is refused before anything is written, as prost does.
        let mut small = [0u8; 3];
        let mut room = &mut small[..];
        if ours.encoded_len() > 3 {
            prop_assert!(ours.encode(&mut room).is_err());
        }
        prop_assert_eq!(pb::SeriesResponse::decode(theirs.encode_to_vec().as_slice()).unwrap(), ours);
    }

    /// Truncated or corrupted bytes give an error or some message, never a panic.
    #[test]
    fn damaged_input_is_an_error(
        pairs in proptest::collection::vec(("[a-c]{1,3}", "[a-c]{1,3}"), 1..6),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let bytes = RefResponse {
            result: Some(RefResult::Series(ref_series(&pairs, &[chunk(0, b"xy")]))),
        }
        .encode_to_vec();
        // Every cut but the empty prefix (an empty frame) ends inside the one field.
        let cut = cut.index(bytes.len());
        prop_assert_eq!(pb::SeriesResponse::decode(&bytes[..cut]).is_err(), cut > 0);
        let mut flipped = bytes.clone();
        let i = flip.index(flipped.len());
        flipped[i] = byte;
        let _ = pb::SeriesResponse::decode(flipped.as_slice());
    }
}

#[test]
fn other_members_and_unknown_fields() {
    use pb::series_response::Result as R;
    for (ours, theirs) in [
        (R::Warning(String::new()), RefResult::Warning(String::new())),
        (
            R::Warning("store down".into()),
            RefResult::Warning("store down".into()),
        ),
        (
            R::Hints(prost_types::Any {
                type_url: "t".into(),
                value: vec![1, 2],
            }),
            RefResult::Hints(prost_types::Any {
                type_url: "t".into(),
                value: vec![1, 2],
            }),
        ),
    ] {
        let ours = pb::SeriesResponse { result: Some(ours) };
        let theirs = RefResponse {
            result: Some(theirs),
        };
        assert_eq!(ours.encode_to_vec(), theirs.encode_to_vec());
        assert_eq!(
            pb::SeriesResponse::decode(theirs.encode_to_vec().as_slice()).unwrap(),
            ours
        );
    }
    // Unknown fields in a label, a series and a frame are skipped (a newer peer may add fields).
    let mut label = pb::Label {
        name: "a".into(),
        value: "1".into(),
    }
    .encode_to_vec();
    label.extend_from_slice(&[0x18, 0x05]); // field 3, varint 5
    let mut series = vec![0x0a, label.len() as u8];
    series.extend_from_slice(&label);
    series.extend_from_slice(&[0x1a, 0x01, 0xff]); // field 3, bytes [ff]
    let mut frame = vec![0x0a, series.len() as u8];
    frame.extend_from_slice(&series);
    frame.extend_from_slice(&[0x48, 0x01]); // field 9, varint 1
    match pb::SeriesResponse::decode(frame.as_slice()).unwrap().result {
        Some(R::Series(s)) => assert_eq!(s.labels, Labels::from_pairs([("a", "1")])),
        other => panic!("{other:?}"),
    }
    // A name that is not UTF-8 is refused, as prost refuses it.
    let bad = [0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0xc3];
    let err = pb::SeriesResponse::decode(&bad[..]).unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    assert!(RefResponse::decode(&bad[..]).is_err());
}

/// A series split over two fields of one frame merges (protobuf's rule for a repeated message member),
/// and a standalone `Series` decodes the same through `merge_field` (the slow path) as through `decode`.
#[test]
fn merging() {
    let a = ref_series(&[("b".into(), "2".into())], &[chunk(0, b"x")]);
    let b = ref_series(&[("a".into(), "1".into())], &[chunk(5, b"y")]);
    let mut bytes = RefResponse {
        result: Some(RefResult::Series(a.clone())),
    }
    .encode_to_vec();
    bytes.extend(
        RefResponse {
            result: Some(RefResult::Series(b.clone())),
        }
        .encode_to_vec(),
    );
    let Some(pb::series_response::Result::Series(s)) =
        pb::SeriesResponse::decode(bytes.as_slice()).unwrap().result
    else {
        panic!("not a series")
    };
    assert_eq!(s.labels, Labels::from_pairs([("a", "1"), ("b", "2")]));
    assert_eq!(s.chunks, vec![chunk(0, b"x"), chunk(5, b"y")]);

    let whole = pb::Series::decode(a.encode_to_vec().as_slice()).unwrap();
    let mut field_by_field = pb::Series::default();
    prost::Message::merge_length_delimited(
        &mut field_by_field,
        a.encode_length_delimited_to_vec().as_slice(),
    )
    .unwrap();
    assert_eq!(whole, field_by_field);
}
