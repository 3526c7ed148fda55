"""Datasets for the experiment runner: built-in and user files, split and standardised.

- :mod:`jaxbp.data.builtin` — iris, wine, digits (bundled with scikit-learn), MNIST-1D (generated
  locally), spirals and blobs (synthetic, seeded);
- :mod:`jaxbp.data.files` — CSV, NPZ, IDX and MATLAB ``.mat`` loaders, errors naming file, line
  and column;
- :mod:`jaxbp.data.split` — labels to classes, stratified splits, standardisation fitted on the
  training split only, one-hot targets.

:func:`load_dataset` puts them together; it is what ``jaxbp train`` calls.

Example:
  >>> ds = load_dataset("digits", seed=0)
  >>> ds.x_train.shape[1], ds.num_classes
  (64, 10)
"""

from __future__ import annotations

import numpy as np

from jaxbp.data.builtin import BUILTIN, SYNTHETIC, load_builtin
from jaxbp.data.files import (
    LABEL_COLUMNS,
    DataError,
    Table,
    check_count,
    check_label_column,
    check_number,
    check_path,
    file_format,
    load_csv,
    load_file,
    load_idx,
    load_mat,
    load_npz,
    read_idx,
)
from jaxbp.data.split import (
    FEATURE_LIMIT,
    SCALINGS,
    Dataset,
    encode_labels,
    fingerprint,
    one_hot,
    prepare,
    split_counts,
    standardiser,
    stratified_split,
    take,
    training_rows,
)

__all__ = [
    "BUILTIN",
    "FEATURE_LIMIT",
    "LABEL_COLUMNS",
    "SCALINGS",
    "SYNTHETIC",
    "DataError",
    "Dataset",
    "Table",
    "encode_labels",
    "file_format",
    "fingerprint",
    "load_builtin",
    "load_csv",
    "load_dataset",
    "load_file",
    "load_idx",
    "load_mat",
    "load_npz",
    "one_hot",
    "prepare",
    "read_idx",
    "split_counts",
    "standardiser",
    "stratified_split",
    "take",
    "training_rows",
]


def load_dataset(
    dataset: str | None = None,
    *,
    data=None,
    test_data=None,
    labels=None,
    test_labels=None,
    label_column="last",
    test_rows: int | None = None,
    classes: int | None = None,
    samples: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    scaling: str = "capped",
) -> Dataset:
    """Loads a built-in dataset or the user's files and splits it train/validation/test.

    Args:
      dataset: a built-in name (:data:`BUILTIN`); exclusive with ``data``.
      data: path of the training data file (CSV, NPZ, IDX images, ``.mat``).
      test_data: path of a file with the test split (UCI ``.tes``); otherwise the test split is
        the last ``test_rows`` rows of ``data`` (e.g. letter's standard last 4000), or else a
        stratified ``test_fraction`` of it.
      labels, test_labels: IDX labels files for ``data`` and ``test_data``.
      label_column: CSV label column: ``first``, ``last`` or a 1-based number.
      test_rows: use the last ``test_rows`` rows of ``data`` as the test split.
      classes, samples: synthetic datasets only.
      val_fraction: stratified share of the training portion held out for validation.
      test_fraction: stratified share held out for testing when there is no other test split.
      seed: the split's (and synthetic generators') seed.
      scaling: feature scaling fitted on the training split (:data:`SCALINGS`).

    Returns:
      A :class:`Dataset`.

    Raises:
      DataError: any problem with the arguments or the data, naming it and the value received.
    """
    if (dataset is None) == (data is None):
        raise DataError(
            "dataset, data: give either a built-in dataset name or a data file, not both or "
            f"neither; got dataset={dataset!r} and data={data!r}"
        )
    check_count(seed, "seed")
    check_number(val_fraction, "val_fraction", low=0, high=1)
    label_column = check_label_column(label_column)
    if test_rows is not None:
        test_rows = check_count(test_rows, "test_rows", low=1)
    for arg, value in (
        ("data", data),
        ("test_data", test_data),
        ("labels", labels),
        ("test_labels", test_labels),
    ):
        if value is not None:
            check_path(value, arg)
    if test_labels is not None and test_data is None:
        raise DataError("test_labels: only used with a test data file (--test-data)")
    if test_rows is not None and (data is None or test_data is not None):
        raise DataError("test_rows: only used with a single data file (--data without --test-data)")
    test = None
    description = None
    if dataset is not None:
        for flag, value in (("test_data", test_data), ("labels", labels)):
            if value is not None:
                raise DataError(f"{flag}: only used with a data file (--data), not a built-in")
        if label_column != "last":
            raise DataError(
                f"label_column: only used with a CSV data file, got {label_column!r} with the "
                f"built-in dataset {dataset!r}"
            )
        train, test = load_builtin(dataset, seed=seed, classes=classes, samples=samples)
        name = dataset
        if test is not None:
            description = "the dataset's own test split"
    else:
        for arg, value in (("classes", classes), ("samples", samples)):
            if value is not None:
                raise DataError(
                    f"{arg}: only the synthetic built-in datasets ({', '.join(SYNTHETIC)}) take "
                    f"it, got {value!r} with the data file {data}"
                )
        kind = file_format(data)
        if kind != "csv" and label_column != "last":
            raise DataError(
                f"label_column: only used with a CSV data file, got {label_column!r} with the "
                f"{kind} file {data}"
            )
        train = load_file(data, labels=labels, label_column=label_column)
        if test_data is not None:
            test = load_file(test_data, labels=test_labels, label_column=label_column)
        elif test_rows is not None:
            m = train.x.shape[0]
            if not 0 < test_rows < m:
                raise DataError(
                    f"test_rows: must be between 1 and {m - 1} for the {m} rows of {data}, "
                    f"got {test_rows}"
                )
            test = take(train, np.arange(m - test_rows, m))
            train = take(train, np.arange(m - test_rows))
            description = f"the last {test_rows} rows as the test split"
        name = str(data)
    return prepare(
        name,
        train,
        test,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        scaling=scaling,
        test_description=description,
    )
