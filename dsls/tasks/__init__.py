"""What a trained model is used for, each task one file: generate (± class guidance), inverse (inpaint, colorize),
interpolate, likelihood, anomaly; evaluate.py rebuilds a checkpoint's search and dispatches them."""

from dsls.errors import TaskError  # noqa: F401  (defined there; importable here)


class Conditions:
    """A search's per-sample inputs as a map-style dataset: item i is {name: tensor[i]} (an index, a label, an
    observation and its mask, ...); the default collate batches them into a dict of tensors."""

    def __init__(self, columns: dict):
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"condition columns differ in length: { {k: len(v) for k, v in columns.items()} }")
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.columns.items()}
