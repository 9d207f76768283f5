"""An independent numpy oracle of one BLUR inner step, written from DESIGN §1 in its own layout.

Neurons a [P, B, n, K], forward synapses W [P, n+1, m, K], backward V [P, m, n, K]; every
contraction is a plain einsum of the DESIGN equation, so it shares no code with rule.py.
"""

import numpy as np

EPS = 1e-3  # must match rule.NORM_EPSILON


def _phi(name, h):
    base = name.replace("_with_derivative", "")
    fn = {
        "identity": lambda v: v,
        "tanh": np.tanh,
        "relu": lambda v: np.maximum(v, 0),
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "relu_tanh": lambda v: np.maximum(np.tanh(v), 0),
    }[base]
    if not name.endswith("_with_derivative"):
        return fn(h)
    deriv = {
        "identity": np.ones_like,
        "tanh": lambda v: 1 - np.tanh(v) ** 2,
        "relu": lambda v: (v > 0).astype(v.dtype),
        "sigmoid": lambda v: fn(v) * (1 - fn(v)),
        "relu_tanh": lambda v: (v > 0) * (1 - np.tanh(v) ** 2),
    }[base]
    out = fn(h)
    out[..., 1] = deriv(h[..., 1])
    return out


def _norm(h, gain, shift):
    mean = h.mean(axis=1, keepdims=True)
    var = h.var(axis=1, keepdims=True)
    return (h - mean) / np.sqrt(var + EPS) * gain[:, None, None, :] + shift[:, None, None, :]


def _bias(a):
    return np.concatenate([a, np.ones(a.shape[:-2] + (1, a.shape[-1]))], axis=-2)


def _plastic(g, rule, w, delta):
    if not rule.multichannel:
        delta = np.repeat(delta[..., :1], delta.shape[-1], axis=-1)
    keep, update = g["synapse_keep"][:, None, None, None], g["synapse_update"][:, None, None, None]
    new = keep * w + update * delta
    if rule.oja:
        new -= np.abs(g["oja_multiplier"])[:, None, None, None] * w * (w**2).sum(1, keepdims=True)
    if rule.saturation:
        alpha = np.abs(g["saturation"])[:, None, None, None] + 1e-6
        new = alpha * np.tanh(new / alpha)
    return new


def step(genome, rule, synapses, x, y):
    """One inner step; returns (new synapses as [(W, V)], logits [P, B, m])."""
    g = {k: np.asarray(v, np.float64) for k, v in genome._asdict().items()}
    syn = [(np.asarray(w, np.float64), np.asarray(v, np.float64)) for w, v in synapses]
    p = syn[0][0].shape[0]
    k = rule.num_states
    x = np.broadcast_to(np.asarray(x, np.float64), (p,) + np.shape(x)[-2:])
    a = [np.concatenate([x[..., None], np.zeros(x.shape + (k - 1,))], -1)]
    gate = lambda name: g[name][:, None, None, None]
    for l, (w, _) in enumerate(syn):
        h = gate("neuron_update") * np.einsum(
            "pijc,pcd,pbid->pbjc", w, g["forward_transform"], _bias(a[-1])
        )
        is_output = l == len(syn) - 1
        if rule.normalize_forward and (rule.normalize_output or not is_output):
            h = _norm(h, g["norm_gain"], g["norm_shift"])
        a.append(_phi(rule.output_activation if is_output else rule.activation, h))
    logits = a[-1][..., 0].copy()
    onehot = np.eye(a[-1].shape[-2])[np.broadcast_to(y, logits.shape[:2])]
    if rule.feedback == "label":
        signal = 2 * onehot - 1
    else:
        e = np.exp(logits - logits.max(-1, keepdims=True))
        signal = onehot - e / e.sum(-1, keepdims=True)
    a[-1] = np.zeros_like(a[-1])
    a[-1][..., 0], a[-1][..., 1] = logits, signal
    sigma = rule.backward_activation or rule.activation
    for l in range(len(syn) - 1, 0, -1):
        w, v = syn[l]
        back = np.swapaxes(w[:, :-1], 1, 2) if rule.symmetric else v
        m = np.einsum("pjic,pcd,pbjd->pbic", back, g["backward_transform"], a[l + 1])
        f, eta = gate("neuron_keep"), gate("neuron_update")
        if rule.backward_mode == "multiplicative_state1":
            h = f * eta * a[l][..., 1:2] * m[..., 1:2]
            if rule.normalize_backward:
                h = _norm(h, g["norm_gain"][:, 1:2], g["norm_shift"][:, 1:2])
            new = a[l].copy()
            new[..., 1:2] = _phi(sigma, h)
            a[l] = new
            continue
        h = f * a[l] + eta * m if rule.backward_mode == "additive" else f * eta * a[l] * m
        if rule.normalize_backward:
            h = _norm(h, g["norm_gain"], g["norm_shift"])
        a[l] = _phi(sigma, h)
    new_syn = []
    hebb = "pbie,pec,pcd,pbjd->pijc"
    for l, (w, v) in enumerate(syn):
        dw = np.einsum(hebb, _bias(a[l]), g["synapse_pre"], g["synapse_post"], a[l + 1])
        dw = dw / x.shape[1]
        new_w = _plastic(g, rule, w, dw)
        if rule.symmetric:
            new_v = np.swapaxes(new_w[:, :-1], 1, 2)
        else:
            dv = np.einsum(hebb, a[l + 1], g["synapse_pre"], g["synapse_post"], a[l]) / x.shape[1]
            new_v = _plastic(g, rule, v, dv)
        new_syn.append((new_w, new_v))
    return new_syn, logits
