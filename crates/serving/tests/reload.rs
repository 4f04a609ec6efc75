//! `ModelService.HandleReloadConfigRequest` on a real server: off unless the operator allows it
//! (a stranger could otherwise unload every model), a new list adding and removing models and
//! answering once they have loaded, a model that cannot load named in the answer while the
//! others serve, what TF Serving refuses refused; and gRPC server reflection listing the services.
mod api_common;

use std::collections::HashMap;
use std::path::Path;

use api_common::*;
use teeserve_wire::tensorflow::serving::file_system_storage_path_source_config::servable_version_policy::{
    Latest, PolicyChoice,
};
use teeserve_wire::tensorflow::serving::file_system_storage_path_source_config::ServableVersionPolicy;
use teeserve_wire::tensorflow::serving::model_server_config::Config;
use teeserve_wire::tensorflow::serving::model_service_client::ModelServiceClient;
use teeserve_wire::tensorflow::serving::{
    ModelConfig, ModelConfigList, ModelServerConfig, PredictRequest, ReloadConfigRequest,
};

fn config(models: &[(&str, &Path)]) -> ReloadConfigRequest {
    ReloadConfigRequest {
        config: Some(ModelServerConfig {
            config: Some(Config::ModelConfigList(ModelConfigList {
                config: models
                    .iter()
                    .map(|(name, base)| ModelConfig {
                        name: (*name).into(),
                        base_path: base.display().to_string(),
                        model_platform: "onnx".into(),
                        model_version_policy: Some(ServableVersionPolicy {
                            policy_choice: Some(PolicyChoice::Latest(Latest { num_versions: 1 })),
                        }),
                        version_labels: HashMap::new(),
                    })
                    .collect(),
            })),
        }),
        metric_names: vec![],
    }
}

async fn predict_code(s: &teeserve_serving::Server, model: &str) -> tonic::Code {
    let mut req = PredictRequest {
        model_spec: spec(model, None, None, ""),
        ..Default::default()
    };
    req.inputs.insert("pixels".into(), rows(1).to_proto(true));
    match grpc(s).await.predict(req).await {
        Ok(_) => tonic::Code::Ok,
        Err(e) => e.code(),
    }
}

#[tokio::test]
async fn the_reload_rpc_is_refused_unless_the_operator_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(options(&base(dir.path()))).await;
    let mut m = ModelServiceClient::new(channel(&s).await);
    let e = m
        .handle_reload_config_request(config(&[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("--reload_config_client_ca")
            && e.message().contains("--reload_config_from_anyone"),
        "{e:?}"
    );
    // Nothing was unloaded.
    assert_eq!(predict_code(&s, "digits").await, tonic::Code::Ok);
}

#[tokio::test]
async fn a_new_list_adds_and_removes_models_and_answers_once_they_load() {
    let dir = tempfile::tempdir().unwrap();
    let first = base(dir.path());
    let other = base(&dir.path().join("other"));
    let mut o = options(&first);
    o.tls.reload_from_anyone = true;
    let s = start(o).await;
    let mut m = ModelServiceClient::new(channel(&s).await);

    // Add a second model: the answer comes once it serves.
    let r = m
        .handle_reload_config_request(config(&[("digits", &first), ("second", &other)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().error_code, 0);
    assert_eq!(predict_code(&s, "second").await, tonic::Code::Ok);
    assert_eq!(predict_code(&s, "digits").await, tonic::Code::Ok);

    // Remove the first: it is unloaded, the second serves on.
    m.handle_reload_config_request(config(&[("second", &other)]))
        .await
        .unwrap();
    assert_eq!(predict_code(&s, "digits").await, tonic::Code::NotFound);
    assert_eq!(predict_code(&s, "second").await, tonic::Code::Ok);

    // A model that cannot load is named in the answer; the others serve.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = m
        .handle_reload_config_request(config(&[("second", &other), ("broken", &empty)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unknown, "{e:?}");
    assert!(
        e.message().contains("model broken: no version found"),
        "{e:?}"
    );
    assert_eq!(predict_code(&s, "second").await, tonic::Code::Ok);

    // What TF Serving refuses: a model named twice, and a config that is not a list.
    let e = m
        .handle_reload_config_request(config(&[("second", &other), ("second", &first)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("more than once"), "{e:?}");
    let e = m
        .handle_reload_config_request(ReloadConfigRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("Only ModelConfigList"), "{e:?}");
    assert_eq!(predict_code(&s, "second").await, tonic::Code::Ok);
}

/// What a reload may ask for is bounded: a list of more than `MAX_MODELS` models is refused
/// before anything is loaded (a reload request of a few megabytes could name a million), and a
/// base path of many numbered directories that do not load is not listed back whole.
#[tokio::test]
async fn a_reload_names_a_bounded_number_of_models_and_lists_few_failed_versions() {
    let dir = tempfile::tempdir().unwrap();
    let first = base(dir.path());
    let mut o = options(&first);
    o.tls.reload_from_anyone = true;
    let s = start(o).await;
    let mut m = ModelServiceClient::new(channel(&s).await);
    let names: Vec<String> = (0..=teeserve_serving::models::MAX_MODELS)
        .map(|i| format!("m{i}"))
        .collect();
    let many: Vec<(&str, &Path)> = names
        .iter()
        .map(|n| (n.as_str(), first.as_path()))
        .collect();
    let e = m
        .handle_reload_config_request(config(&many))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("lists 1025 models; at most 1024"),
        "{e:?}"
    );
    assert_eq!(predict_code(&s, "digits").await, tonic::Code::Ok);

    // Ten numbered directories, none a model: the newest four are named, the rest counted.
    let junk = dir.path().join("junk");
    for v in 1..=10 {
        std::fs::create_dir_all(junk.join(v.to_string())).unwrap();
    }
    let mut all = config(&[("digits", &first), ("junk", &junk)]);
    if let Some(Config::ModelConfigList(l)) = all.config.as_mut().and_then(|c| c.config.as_mut()) {
        l.config[1].model_version_policy = Some(ServableVersionPolicy {
            policy_choice: Some(PolicyChoice::All(Default::default())),
        });
    }
    let e = m.handle_reload_config_request(all).await.unwrap_err();
    assert!(
        e.message().contains("model junk did not load: version 10:")
            && e.message().contains("version 7:")
            && !e.message().contains("version 6:")
            && e.message().contains("and 6 older versions"),
        "{e:?}"
    );
    assert_eq!(predict_code(&s, "digits").await, tonic::Code::Ok);
}

#[tokio::test]
async fn server_reflection_lists_the_services() {
    use teeserve_wire::FILE_DESCRIPTOR_SET;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    assert!(!FILE_DESCRIPTOR_SET.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let s = start(options(&base(dir.path()))).await;
    let mut c = ServerReflectionClient::new(channel(&s).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = c
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
    ] {
        assert!(names.iter().any(|n| n == want), "{names:?}");
    }
}
