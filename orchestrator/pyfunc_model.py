"""MLflow pyfunc wrapper of ``trainables.predictor.TextClassifier`` ("models from code").

MLflow logs this file itself as the model's code, so no Python object is pickled. Input: a
DataFrame with a ``text`` column (or one string column), a list of strings, or ``{"text": [...]}``.
Output: a DataFrame with ``label``, ``score`` and one ``score_<label>`` column per label.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

MODEL_DIR_ARTIFACT = "model_dir"


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[column].tolist()]
    if isinstance(model_input, dict):
        value = model_input.get("text", next(iter(model_input.values())))
        return [str(t) for t in ([value] if isinstance(value, str) else value)]
    if isinstance(model_input, str):
        return [model_input]
    return [str(t) for t in model_input]


def predictions_frame(rows: list[dict[str, Any]], label_names: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"label": r["label"], "score": r["score"], **{f"score_{n}": r["scores"][n] for n in label_names}}
            for r in rows
        ],
        columns=["label", "score", *[f"score_{n}" for n in label_names]],
    )


class TextClassifierModel(PythonModel):
    def load_context(self, context) -> None:
        from trainables.predictor import TextClassifier

        self.classifier = TextClassifier(context.artifacts[MODEL_DIR_ARTIFACT])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        rows = self.classifier.predict(_texts(model_input))
        return predictions_frame(rows, self.classifier.label_names)


mlflow.models.set_model(TextClassifierModel())
