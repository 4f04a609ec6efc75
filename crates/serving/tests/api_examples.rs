//! The server end to end on loopback, for what a request or a model's files carry beyond a
//! tensor: messages that are not protobuf, warmup files (Predict, Classify and Regress
//! records, and hostile ones), and tf.Examples with a context.
mod api_common;

use teeserve_serving::Server;
use teeserve_tensor::Data;
use teeserve_wire::tensorflow::serving::{
    prediction_service_client::PredictionServiceClient, ModelSpec, PredictRequest,
};

use api_common::*;

/// Sends raw bytes as the message of a gRPC call (what a broken or hostile client sends).
#[derive(Default)]
struct RawCodec;

struct Raw;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(buf);
        Ok(Some(bytes::Buf::copy_to_bytes(buf, n).to_vec()))
    }
}

#[tokio::test]
async fn a_message_that_is_not_protobuf_is_internal_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(options(&base(dir.path()))).await;
    let ch = channel(&s).await;
    let path = "/tensorflow.serving.PredictionService/Predict";
    for body in [
        vec![0xff; 32],                     // field 31, wire type 7: no such wire type
        vec![0x0a, 0x80, 0x80, 0x80, 0x08], // model_spec of 16 MiB in a 5-byte message
    ] {
        let mut raw = tonic::client::Grpc::new(ch.clone());
        raw.ready().await.unwrap();
        let e = raw
            .unary(
                tonic::Request::new(body.clone()),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal, "{body:x?}: {e:?}");
        assert!(
            e.message().contains("decode"),
            "the message names the failure: {e:?}"
        );
    }
    // A well-formed request on the same channel is answered.
    let r = PredictionServiceClient::new(ch)
        .predict(PredictRequest {
            model_spec: spec("digits", None, None, ""),
            inputs: [("pixels".to_owned(), rows(1).to_proto(true))]
                .into_iter()
                .collect(),
            output_filter: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.outputs.is_empty());
}

/// A warmup file (TFRecord of PredictionLog) of `n` Predict requests of `rows` digits each.
fn warmup_file(n: usize, rows_per_request: usize) -> Vec<u8> {
    use prost::Message;
    use teeserve_wire::tensorflow::serving::{prediction_log::LogType, PredictLog, PredictionLog};
    let log = PredictionLog {
        log_type: Some(LogType::PredictLog(PredictLog {
            request: Some(PredictRequest {
                model_spec: Some(ModelSpec {
                    name: "digits".into(),
                    ..Default::default()
                }),
                inputs: [("pixels".to_owned(), rows(rows_per_request).to_proto(true))]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            response: None,
        })),
    };
    (0..n)
        .flat_map(|_| teeserve_serving::fuzzing::frame_record(&log.encode_to_vec()))
        .collect()
}

#[tokio::test]
async fn warmup_requests_are_replayed_before_a_version_serves_and_a_bad_file_fails_its_load() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    let warmup = b.join("1/assets.extra/tf_serving_warmup_requests");
    std::fs::create_dir_all(warmup.parent().unwrap()).unwrap();
    // A good file: the version loads and serves.
    std::fs::write(&warmup, warmup_file(3, 2)).unwrap();
    let s = start(options(&b)).await;
    assert!(s.core.repo.ready());
    s.shutdown().await;
    // A damaged record: the version fails to load, naming the record and the damage, and the
    // server (whose only model it is) does not start.
    let mut bad = warmup_file(3, 2);
    let last = bad.len() - 5;
    bad[last] ^= 1;
    std::fs::write(&warmup, &bad).unwrap();
    let e = Server::start(options(&b), None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("warmup file: record 2: data checksum mismatch"),
        "{e}"
    );
    // A request the model refuses (a wrong input name) fails the load too.
    let mut wrong = warmup_file(1, 1);
    let at = wrong.windows(6).position(|w| w == b"pixels").unwrap();
    wrong[at..at + 6].copy_from_slice(b"pixelz");
    // Framed again: the checksum covers the data.
    let data = wrong[12..wrong.len() - 4].to_vec();
    std::fs::write(&warmup, teeserve_serving::fuzzing::frame_record(&data)).unwrap();
    let e = Server::start(options(&b), None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("warmup file: record 0: no input \"pixels\""),
        "{e}"
    );
}

#[tokio::test]
async fn a_warmup_record_declaring_a_huge_shape_fails_the_load_without_allocating_it() {
    use prost::Message;
    use teeserve_wire::tensorflow::serving::{prediction_log::LogType, PredictLog, PredictionLog};
    use teeserve_wire::tensorflow::{tensor_shape_proto, TensorProto, TensorShapeProto};
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    let warmup = b.join("1/assets.extra/tf_serving_warmup_requests");
    std::fs::create_dir_all(warmup.parent().unwrap()).unwrap();
    // One float that "fills" [1 << 25, 4]: 512 MiB decoded, from a record of a few dozen bytes.
    let huge = TensorProto {
        dtype: teeserve_wire::tensorflow::DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: [1i64 << 25, 4]
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        float_val: vec![0.5],
        ..Default::default()
    };
    let log = PredictionLog {
        log_type: Some(LogType::PredictLog(PredictLog {
            request: Some(PredictRequest {
                inputs: [("pixels".to_owned(), huge)].into_iter().collect(),
                ..Default::default()
            }),
            response: None,
        })),
    };
    std::fs::write(
        &warmup,
        teeserve_serving::fuzzing::frame_record(&log.encode_to_vec()),
    )
    .unwrap();
    let e = Server::start(options(&b), None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("warmup file: record 0: input \"pixels\""), "{e}");
    assert!(e.contains("more than the 134217728 allowed"), "{e}");
}

/// tf.Examples of the digits model's 64 features (one float feature `x` of `width` values).
fn digit_examples(n: usize, width: usize) -> Vec<teeserve_wire::tensorflow::Example> {
    use teeserve_wire::tensorflow::{feature, Example, Feature, Features, FloatList};
    let x = pixels();
    let Data::F32(v) = &x.data else { panic!() };
    (0..n)
        .map(|i| Example {
            features: Some(Features {
                feature: [(
                    "x".to_owned(),
                    Feature {
                        kind: Some(feature::Kind::FloatList(FloatList {
                            value: v[i * 64..i * 64 + width].to_vec(),
                        })),
                    },
                )]
                .into_iter()
                .collect(),
            }),
        })
        .collect()
}

/// A one-record warmup file of a Classify (or Regress) request on `examples`.
fn examples_warmup(
    classify: bool,
    examples: Vec<teeserve_wire::tensorflow::Example>,
    context: Option<teeserve_wire::tensorflow::Example>,
) -> Vec<u8> {
    use prost::Message;
    use teeserve_wire::tensorflow::serving::{
        input, prediction_log::LogType, ClassificationRequest, ClassifyLog, ExampleListWithContext,
        Input, PredictionLog, RegressLog, RegressionRequest,
    };
    let input = Some(Input {
        kind: Some(input::Kind::ExampleListWithContext(
            ExampleListWithContext { examples, context },
        )),
    });
    let model_spec = spec("digits", None, None, "");
    let log_type = if classify {
        LogType::ClassifyLog(ClassifyLog {
            request: Some(ClassificationRequest { model_spec, input }),
            response: None,
        })
    } else {
        LogType::RegressLog(RegressLog {
            request: Some(RegressionRequest { model_spec, input }),
            response: None,
        })
    };
    let log = PredictionLog {
        log_type: Some(log_type),
    };
    teeserve_serving::fuzzing::frame_record(&log.encode_to_vec())
}

#[tokio::test]
async fn classify_and_regress_warmup_records_run_and_one_the_model_refuses_fails_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    let warmup = b.join("1/assets.extra/tf_serving_warmup_requests");
    std::fs::create_dir_all(warmup.parent().unwrap()).unwrap();
    // Classify records run on the digits model (its rows rule: 64 floats per example).
    std::fs::write(&warmup, examples_warmup(true, digit_examples(3, 64), None)).unwrap();
    let s = start(options(&b)).await;
    assert!(s.core.repo.ready());
    s.shutdown().await;
    // They are run, not skipped: examples of 63 features fail the load, naming the record.
    std::fs::write(&warmup, examples_warmup(true, digit_examples(2, 63), None)).unwrap();
    let e = Server::start(options(&b), None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("warmup file: record 0: the model refused it"),
        "{e}"
    );
    // A Regress record runs too, and its answer is read as Regress reads it: the digits model
    // gives ten values per example where Regress needs one, so the second record fails.
    let mut two = examples_warmup(true, digit_examples(1, 64), None);
    two.extend(examples_warmup(false, digit_examples(1, 64), None));
    std::fs::write(&warmup, &two).unwrap();
    let e = Server::start(options(&b), None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(
            "warmup file: record 1: Regress needs one value per example; the model gives 10"
        ),
        "{e}"
    );
    // A record of a few megabytes whose context would be copied into each of its examples:
    // refused before the copies are made.
    let context = digit_examples(1, 64).pop().map(|mut e| {
        let f = e.features.as_mut().unwrap().feature.get_mut("x").unwrap();
        if let Some(teeserve_wire::tensorflow::feature::Kind::FloatList(l)) = &mut f.kind {
            l.value = vec![0.5; 1 << 20];
        }
        e
    });
    let empty = vec![teeserve_wire::tensorflow::Example::default(); 100_000];
    std::fs::write(&warmup, examples_warmup(true, empty, context)).unwrap();
    let e = Server::start(options(&b), None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("warmup file: record 0: the examples take more than")
            && e.contains("--max_request_tensor_bytes"),
        "{e}"
    );
}

#[tokio::test]
async fn a_context_merged_into_many_examples_is_refused_before_it_is_copied() {
    use teeserve_wire::tensorflow::serving::{
        input, ClassificationRequest, ExampleListWithContext, Input, RegressionRequest,
    };
    use teeserve_wire::tensorflow::{feature, Example, Feature, Features, FloatList};
    let dir = tempfile::tempdir().unwrap();
    let s = start(options(&base(dir.path()))).await;
    // 4 MiB of context and 100,000 empty examples: a 4.2 MB request that would take 400 GB
    // once the context is merged into each example.
    let context = Example {
        features: Some(Features {
            feature: [(
                "c".to_owned(),
                Feature {
                    kind: Some(feature::Kind::FloatList(FloatList {
                        value: vec![0.25; 1 << 20],
                    })),
                },
            )]
            .into_iter()
            .collect(),
        }),
    };
    let input = Some(Input {
        kind: Some(input::Kind::ExampleListWithContext(
            ExampleListWithContext {
                examples: vec![Example::default(); 100_000],
                context: Some(context),
            },
        )),
    });
    let mut c = grpc(&s).await;
    let e = c
        .classify(ClassificationRequest {
            model_spec: spec("digits", None, None, ""),
            input: input.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("once the context (4194304 bytes) is merged into each")
            && e.message().contains("--max_request_tensor_bytes"),
        "{e:?}"
    );
    let e = c
        .regress(RegressionRequest {
            model_spec: spec("digits", None, None, ""),
            input,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // REST: the same request as JSON (a context of 1 Mi numbers, 100,000 empty examples).
    let body = format!(
        "{{\"context\": {{\"c\": [{}]}}, \"examples\": [{}]}}",
        vec!["0.25"; 1 << 20].join(","),
        vec!["{}"; 100_000].join(",")
    );
    let mut r = rest(&s).await;
    let (status, b) = r
        .request(
            hyper::Method::POST,
            "/v1/models/digits:classify",
            body.into_bytes(),
        )
        .await
        .unwrap();
    let b = String::from_utf8_lossy(&b);
    assert_eq!(status, 400, "{b}");
    assert!(b.contains("--max_request_tensor_bytes"), "{b}");
    // The server goes on serving.
    let (status, _) = predict_one_zero_row(&s.rest_addr.unwrap().to_string()).await;
    assert_eq!(status, 200);
    s.shutdown().await;
}
