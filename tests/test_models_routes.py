from __future__ import annotations


def test_models_lists_loaded_and_failed_models_with_their_cards(client) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    models = {m["disease"]: m for m in response.json()["models"]}
    assert set(models) == {"malaria", "retinopathy", "pneumonia"}
    malaria = models["malaria"]
    assert malaria["status"] == "ready" and malaria["version"] == 1 and malaria["error"] is None
    card = malaria["card"]
    assert card["classes"] == ["infected", "uninfected"]
    assert card["input"] == {
        "height": 50,
        "width": 50,
        "channels": 1,
        "colour_mode": "grayscale",
        "enhancement": "none",
        "dtype": "float32",
        "value_range": [0.0, 1.0],
    }
    assert {"accuracy", "sensitivity", "specificity", "roc_auc"} <= set(card["metrics"])
    assert card["intended_use"] == "research use only; not for diagnosis"
    assert models["retinopathy"]["card"]["input"]["colour_mode"] == "rgb"
    failed = models["pneumonia"]
    assert failed["status"] == "failed" and failed["card"] is None
    assert "metadata.json is not a valid model card" in failed["error"]


def test_one_model_and_an_unknown_one(client) -> None:
    assert client.get("/models/retinopathy").json()["card"]["disease"] == "retinopathy"
    response = client.get("/models/cholera")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_disease"


def test_openapi_documents_responses_and_errors(client) -> None:
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict/{disease}"]["post"]
    assert {"200", "404", "413", "415", "422", "503"} <= set(predict["responses"])
    assert "Prediction" in spec["components"]["schemas"] and "ErrorBody" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200
