"""A network as ``[[layers]]`` tables (jaxbp.layers.spec): every layer type writes its spec and
builds again — through TOML text — to the same parameters and outputs; every error names where."""

import tomllib

import jax
import jax.numpy as jnp
import pytest

from jaxbp import layers
from jaxbp.layers import models
from jaxbp.layers import spec as S

F64 = jnp.float64


def toml_round_trip(net):
    """``net`` written to tables, to TOML text, read back and built again."""
    tables = layers.to_spec(net)
    read = tomllib.loads(layers.to_toml(tables))["layers"]
    assert read == tables  # the text holds exactly the tables
    return layers.from_spec(read), tables


def assert_same_network(net, rebuilt, in_shape, x, *, train=False):
    """Same key → identical params; same (params, x, key) → identical outputs (exact)."""
    key = jax.random.key(0)
    params, out_shape = net.init(key, in_shape)
    params2, out_shape2 = rebuilt.init(key, in_shape)
    assert out_shape2 == out_shape
    assert jax.tree.structure(params2) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        assert a.dtype == b.dtype and jnp.array_equal(a, b)
    k = jax.random.key(3) if train else None
    y, _ = net.forward(params, x, key=k, train=train)
    y2, _ = rebuilt.forward(params2, x, key=k, train=train)
    assert y2.dtype == y.dtype and jnp.array_equal(y, y2)
    assert rebuilt.name == net.name


def normal(shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(1), shape, dtype)


# (case id, layer, one example's shape, input, train)
CASES = [
    ("Dense", lambda: layers.Dense(3, scheme="glorot", dtype=F64), (4,), None, False),
    ("Conv2D", lambda: layers.Conv2D(2, (3, 2), (1, 2), "SAME", algorithm="im2col"), (5, 5, 1),
     None, False),
    ("MaxPool2D", lambda: layers.MaxPool2D(2, 1, "SAME"), (4, 4, 2), None, False),
    ("AvgPool2D", lambda: layers.AvgPool2D((2, 1)), (4, 4, 2), None, False),
    ("BatchNorm", lambda: layers.BatchNorm(momentum=0.8, epsilon=1e-3, dtype=F64), (3,), None,
     True),
    ("LayerNorm", lambda: layers.LayerNorm(epsilon=1e-4), (2, 3), None, False),
    ("Dropout", lambda: layers.Dropout(0.25), (6,), None, True),
    ("Embedding", lambda: layers.Embedding(7, 3), (4,), jnp.array([[0, 6, 2, 2]]), False),
    ("SelfAttention", lambda: layers.SelfAttention(2, 4, causal=True), (3, 4), None, False),
    ("Elementwise", lambda: layers.Elementwise("leaky_relu"), (5,), None, False),
    *[(n, getattr(layers, n), (5,), None, False)
      for n in ("Sigmoid", "Tanh", "Relu", "LeakyRelu", "Softplus", "Elu", "Identity")],
    ("Flatten", layers.Flatten, (2, 2, 1), None, False),
    ("Reshape", lambda: layers.Reshape((2, 3)), (6,), None, False),
    ("RandomShift", lambda: layers.RandomShift(1), (4, 4, 1), None, True),
    ("Sequential", lambda: layers.Sequential(layers.Dense(3), layers.Relu()), (4,), None, False),
    ("Residual", lambda: layers.Residual(layers.Dense(4)), (4,), None, False),
]  # fmt: skip


@pytest.mark.parametrize(("factory", "in_shape", "x", "train"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_every_built_in_layer_type_round_trips(factory, in_shape, x, train):
    layer = factory()
    net = layers.Sequential(layer)
    rebuilt, tables = toml_round_trip(net)
    assert tables[0]["type"] == layer.spec.type
    assert layers.to_spec(rebuilt) == tables
    x = normal((2, *in_shape)) if x is None else x
    assert_same_network(net, rebuilt, in_shape, x, train=train)


def test_every_built_in_factory_is_registered_and_listed():
    cases = {c[0] for c in CASES}
    assert set(S.BUILT_IN) == cases | {"mlp", "lenet"}
    assert set(S.BUILT_IN) <= set(layers.LAYER_TYPES)
    assert S.PRESETS >= {"mlp", "lenet"}
    for name in S.BUILT_IN:
        assert layers.LAYER_TYPES[name].layer_type == name


def test_the_spec_records_the_factory_its_arguments_defaults_and_dtype_by_name():
    assert layers.Dense(3).spec.kwargs == (("features", 3), ("scheme", "he"), ("dtype", "float32"))
    assert layers.Dense(3, dtype=F64).spec.arguments["dtype"] == "float64"
    assert layers.Relu().spec.type == "Relu" and layers.Relu().spec.kwargs == ()
    assert layers.Elementwise("tanh").spec.arguments == {"activation": "tanh"}
    assert layers.Reshape([8, 8, 1]).spec.arguments == {"shape": (8, 8, 1)}  # list → tuple
    assert layers.Layer(None, None, None).spec is None  # built by hand: no spec


def test_a_layer_with_its_spec_stays_hashable_and_a_static_jit_argument():
    net = layers.Sequential(layers.Reshape((2, 2)), layers.Residual(layers.Dense(2)))
    hash(net)
    params, _ = net.init(jax.random.key(0), (4,))
    run = jax.jit(lambda n, p, x: n.forward(p, x)[0], static_argnums=0)
    assert run(net, params, normal((3, 4))).shape == (3, 2, 2)


def test_a_lenet_like_network_round_trips_through_toml_text():
    net = layers.Sequential(
        layers.Reshape((8, 8, 1)),
        layers.Conv2D(4, 3, padding="SAME"),
        layers.Relu(),
        layers.MaxPool2D(2, 2),
        layers.BatchNorm(),
        layers.Residual(layers.Sequential(layers.Conv2D(4, (3, 3), padding="SAME"), layers.Tanh())),
        layers.Flatten(),
        layers.Dense(16),
        layers.Dropout(0.5),
        layers.Dense(10),
    )
    text = layers.to_toml(layers.to_spec(net))
    assert text.count("[[layers]]") == 10
    assert 'type = "Residual"\nlayer = {type = "Sequential", layers = [{type = "Conv2D"' in text
    assert "shape = [8, 8, 1]" in text and 'dtype = "float32"' in text
    rebuilt = layers.from_toml(text)
    x = normal((3, 64))
    assert_same_network(net, rebuilt, (64,), x, train=True)  # dropout, batch statistics
    assert layers.to_toml(layers.to_spec(rebuilt)) == text


def test_mlp_is_a_preset_table_and_round_trips():
    """mlp replaces its Sequential's init (it draws init_params'), so it is not its layers:
    its spec is the one table of the preset, and that one table builds the mlp itself."""
    net = layers.mlp([4, 5, 6, 3], activation=["tanh", "relu"], scheme="ng", dtype=F64)
    tables = layers.to_spec(net)
    assert tables == [{"type": "mlp", "sizes": [4, 5, 6, 3], "activation": ["tanh", "relu"],
                       "scheme": "ng", "dtype": "float64"}]  # fmt: skip
    rebuilt, _ = toml_round_trip(net)
    assert len(rebuilt.sublayers) == len(net.sublayers) == 5  # not a Sequential around it
    assert_same_network(net, rebuilt, (4,), normal((2, 4), F64))
    # the same network as models.mlp, which records no spec of its own (its init is replaced)
    assert_same_network(models.mlp([4, 5, 6, 3], activation=["tanh", "relu"], scheme="ng",
                                   dtype=F64), rebuilt, (4,), normal((2, 4), F64))  # fmt: skip


def test_lenet_is_a_preset_table_and_round_trips():
    net = layers.lenet(3, channels=(2,), kernel_size=3, hidden=(4,), dropout=0.5)
    tables = layers.to_spec(net)
    assert tables == [{"type": "lenet", "num_classes": 3, "channels": [2], "kernel_size": 3,
                       "hidden": [4], "activation": "relu", "dropout": 0.5,
                       "dtype": "float32"}]  # fmt: skip
    rebuilt, _ = toml_round_trip(net)
    assert_same_network(net, rebuilt, (8, 8, 1), normal((2, 8, 8, 1)), train=True)
    # a preset inside a longer spec is one layer of the Sequential
    longer = layers.from_spec([*tables, {"type": "Softplus"}])
    assert len(longer.sublayers) == 2 and longer.sublayers[0].spec.type == "lenet"
    # models.lenet's plain Sequential writes out layer by layer
    assert [t["type"] for t in layers.to_spec(models.lenet(3, channels=(2,), hidden=()))] == [
        "Conv2D", "Elementwise", "MaxPool2D", "Flatten", "Dense"]  # fmt: skip


# --- a user's own layer type ----------------------------------------------------------------------
@pytest.fixture
def registered():
    """Names registered by a test, unregistered after it."""
    names = []
    yield names
    for name in names:
        layers.LAYER_TYPES.pop(name, None)


def scale_factory(factor: float = 2.0, *, dims: tuple = (1,)) -> layers.Layer:
    """A user's layer y = factor · x with its own hand backward."""
    del dims

    def init(key, in_shape):
        return (), tuple(in_shape)

    def forward(params, x, *, key=None, train=False):
        return factor * x, None

    def backward(params, cache, dy):
        return (), factor * dy

    return layers.Layer(init, forward, backward, name=f"Scale({factor})")


def test_a_user_registered_layer_type_round_trips(registered):
    registered.append("test_spec.Scale")
    Scale = layers.register_layer("test_spec.Scale", scale_factory)
    assert Scale.__doc__ == scale_factory.__doc__
    net = layers.Sequential(layers.Dense(3), Scale(0.5, dims=[1, 2]), layers.Residual(Scale()))
    rebuilt, tables = toml_round_trip(net)
    assert tables[1] == {"type": "test_spec.Scale", "factor": 0.5, "dims": [1, 2]}
    assert tables[2] == {"type": "Residual", "layer": {"type": "test_spec.Scale", "factor": 2.0,
                                                       "dims": [1]}}  # fmt: skip
    assert 'type = "test_spec.Scale"' in layers.to_toml(tables)
    assert_same_network(net, rebuilt, (4,), normal((2, 4)))


def test_register_layer_as_a_decorator(registered):
    registered.append("test_spec.Twice")

    @layers.register_layer("test_spec.Twice")
    def Twice() -> layers.Layer:
        return scale_factory(2.0)

    assert layers.to_spec(layers.Sequential(Twice())) == [{"type": "test_spec.Twice"}]
    assert layers.LAYER_TYPES["test_spec.Twice"] is Twice


def test_register_layer_refuses_a_taken_name_or_a_non_callable(registered):
    with pytest.raises(ValueError, match=r"register_layer: name 'Dense' is already taken by "
                       r"jaxbp.layers.dense.Dense; choose another name"):  # fmt: skip
        layers.register_layer("Dense", scale_factory)
    with pytest.raises(ValueError, match=r"name 'mlp' is already taken"):
        layers.register_layer("mlp", scale_factory)
    with pytest.raises(TypeError, match=r"register_layer: factory for 'test_spec.X' must be "
                       r"callable, got int 3"):  # fmt: skip
        layers.register_layer("test_spec.X", 3)
    with pytest.raises(TypeError, match=r"register_layer: name must be a str, got int 3"):
        layers.register_layer(3, scale_factory)
    with pytest.raises(ValueError, match=r"register: type_name must be a non-empty name, got ' '"):
        layers.register_layer(" ", scale_factory)
    registered.append("test_spec.Once")
    layers.register_layer("test_spec.Once", scale_factory)
    with pytest.raises(ValueError, match=r"name 'test_spec.Once' is already taken by .*scale_fac"):
        layers.register_layer("test_spec.Once", scale_factory)


# --- errors of to_spec ----------------------------------------------------------------------------
def test_to_spec_refuses_a_layer_built_by_hand_naming_it():
    hand = scale_factory(3.0)  # a Layer(...) of no registered factory
    with pytest.raises(ValueError, match=r"to_spec: layers\[1\] \(Scale\(3.0\)\) has no spec: it "
                       r"was built by hand as Layer\(...\)"):  # fmt: skip
        layers.to_spec(layers.Sequential(layers.Relu(), hand))
    nested = layers.Sequential(layers.Residual(layers.Sequential(layers.Relu(), hand)))
    with pytest.raises(ValueError, match=r"to_spec: layers\[0\]\.layer\.layers\[1\] \(Scale"):
        layers.to_spec(nested)


def test_to_spec_refuses_a_replaced_layer_naming_it_and_what_was_replaced():
    dense = layers.Dense(3)
    wrong = dense._replace(backward=lambda params, cache, dy: (params, dy))
    with pytest.raises(ValueError, match=r"to_spec: layers\[0\] \(Dense\(3\)\) is not what its "
                       r"spec builds: its backward replaced after Dense built it"):  # fmt: skip
        layers.to_spec(layers.Sequential(wrong, layers.Relu()))
    assert layers.to_spec(layers.Sequential(dense._replace(name="renamed")))  # functions kept
    with pytest.raises(ValueError, match=r"to_spec: net \(Sequential\(Dense\(5\)\)\) is not what "
                       r"its spec builds: its init replaced after Sequential"):  # fmt: skip
        layers.to_spec(models.mlp([4, 5]))  # models.mlp itself: layers.mlp records the preset


def test_to_spec_refuses_what_is_not_a_network_or_has_no_toml_form(registered):
    with pytest.raises(ValueError, match=r"to_spec: net must be a Sequential or a preset \(lenet, "
                       r"mlp\), got Dense\(3\) \(type 'Dense'\); write a single layer as "
                       r"Sequential\(layer\)"):  # fmt: skip
        layers.to_spec(layers.Dense(3))
    with pytest.raises(TypeError, match=r"to_spec: net must be a jaxbp.layers.Layer, got list"):
        layers.to_spec([layers.Dense(3)])
    registered.append("test_spec.Odd")

    @layers.register_layer("test_spec.Odd")
    def Odd(option=1, table=None) -> layers.Layer:
        return scale_factory()

    with pytest.raises(ValueError, match=r"to_spec: layers\[0\]\.option = <built-in function "
                       r"print> \(builtin_function_or_method\) has no TOML form"):  # fmt: skip
        layers.to_spec(layers.Sequential(Odd(print)))
    with pytest.raises(ValueError, match=r"to_spec: layers\[0\] \(Scale\(2.0\)\): option = None "
                       r"has no TOML form and is not the default \(1\)"):  # fmt: skip
        layers.to_spec(layers.Sequential(Odd(None)))
    unhashable = Odd(table={"a": 1})  # still built: recording never fails a build
    assert unhashable.spec.problem is not None
    with pytest.raises(ValueError, match=r"to_spec: layers\[0\] \(Scale\(2.0\)\) has no usable "
                       r"spec: test_spec.Odd: table = \{'a': 1\} is not hashable"):  # fmt: skip
        layers.to_spec(layers.Sequential(unhashable))
    assert layers.to_spec(layers.Sequential(Odd())) == [{"type": "test_spec.Odd", "option": 1}]


# --- errors of from_spec --------------------------------------------------------------------------
def test_from_spec_names_an_unknown_type_with_its_index_and_the_valid_names():
    tables = [{"type": "Relu"}, {"type": "Dnse", "features": 3}]
    with pytest.raises(ValueError, match=r"layers\[1\]: type 'Dnse' is not a registered layer "
                       r"type; valid: AvgPool2D, BatchNorm, .*Dense, .*Sequential"):  # fmt: skip
        layers.from_spec(tables)
    with pytest.raises(ValueError, match=r"layers\[0\]: has no 'type' key"):
        layers.from_spec([{"features": 3}])
    with pytest.raises(TypeError, match=r"layers\[0\]: type must be a string, got int 3"):
        layers.from_spec([{"type": 3}])
    with pytest.raises(TypeError, match=r"layers\[1\]: must be a table, got str 'Relu'"):
        layers.from_spec([{"type": "Relu"}, "Relu"])


def test_from_spec_names_an_unknown_missing_or_wrong_argument_with_its_index():
    with pytest.raises(ValueError, match=r"layers\[0\] \(Dense\): unknown argument 'feature' = 3; "
                       r"Dense takes features, scheme, dtype"):  # fmt: skip
        layers.from_spec([{"type": "Dense", "feature": 3}])
    with pytest.raises(ValueError, match=r"layers\[0\] \(Dense\): missing a required argument: "
                       r"'features'"):  # fmt: skip
        layers.from_spec([{"type": "Dense"}])
    with pytest.raises(ValueError, match=r"layers\[0\] \(Dense\): Dense: features must be a "
                       r"positive int, got '8'"):  # fmt: skip
        layers.from_spec([{"type": "Dense", "features": "8"}])
    with pytest.raises(ValueError, match=r"layers\[0\]\.dtype: dtype 'float99' is not a dtype"):
        layers.from_spec([{"type": "Dense", "features": 8, "dtype": "float99"}])
    with pytest.raises(ValueError, match=r"layers\[2\]\.layer \(Reshape\): Reshape: shape must be "
                       r"a tuple of positive ints, got \(0, 2\)"):  # fmt: skip
        layers.from_spec([{"type": "Relu"}, {"type": "Relu"},
                          {"type": "Residual", "layer": {"type": "Reshape", "shape": [0, 2]}}])  # fmt: skip
    with pytest.raises(TypeError, match=r"layers\[0\] \(Sequential\): layers must be a list, got "
                       r"dict"):  # fmt: skip
        layers.from_spec([{"type": "Sequential", "layers": {"type": "Relu"}}])


def test_from_spec_and_from_toml_refuse_what_is_not_a_list_of_tables():
    with pytest.raises(TypeError, match=r"from_spec: tables must be a list of tables \(the "
                       r"\[\[layers\]\] array\), got dict"):  # fmt: skip
        layers.from_spec({"type": "Relu"})
    with pytest.raises(ValueError, match=r"from_spec: tables must hold at least one layer table"):
        layers.from_spec([])
    with pytest.raises(ValueError, match=r"from_toml: the document has no 'layers' array of "
                       r"tables; keys: 'model'"):  # fmt: skip
        layers.from_toml('model = "layers"\n')


def test_to_toml_writes_arrays_of_tables_and_refuses_values_without_a_toml_form():
    tables = [{"type": "X", "a": 1, "b": -2.5e-7, "c": True, "d": "q\"uote", "e": [1, [2.0]],
               "f": {"type": "Y", "g": []}, "odd key": float("inf")}]  # fmt: skip
    text = layers.to_toml(tables, key="blocks")
    assert text.startswith("[[blocks]]\n")
    assert tomllib.loads(text) == {"blocks": tables}
    with pytest.raises(ValueError, match=r"to_toml: layers\[0\]\.a = None \(NoneType\) has no "
                       r"TOML form"):  # fmt: skip
        layers.to_toml([{"a": None}])
    with pytest.raises(TypeError, match=r"to_toml: tables must be a list of tables, got dict"):
        layers.to_toml({"type": "X"})
    with pytest.raises(TypeError, match=r"to_toml: tables\[0\] must be a table, got int"):
        layers.to_toml([1])
