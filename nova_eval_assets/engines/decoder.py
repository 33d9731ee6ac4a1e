"""A lean forward pass for Llama-family decoders, with a preallocated KV cache.

The hf engine's decode loop (engines/hf.py) runs models of the Llama family (``llama``,
``mistral`` without a sliding window, ``qwen2``, ``qwen3``: SmolLM2, Llama 2/3, Qwen 2.5/3,
Mistral 7B v0.2+, ...) through this module instead of the transformers forward; other
architectures keep the transformers forward.  It computes the same function with the
model's own weights, rotary embedding and norm epsilons, without what costs most per
decode step on a CPU (profiled in BENCHMARKS.md):

* the KV cache is preallocated and written in place (one column per step), where
  transformers' ``DynamicCache`` concatenates, i.e. copies every layer's cache at every
  step;
* attention is two batched matrix products over the cache with the grouped query heads
  as rows of one product (no ``repeat_kv``), where ``sdpa`` on CPU costs 2.5 ms (float32)
  to 5.7 ms (bfloat16) per layer and step at batch 32;
* keys are stored transposed (``K^T``, columns = positions), since oneDNN's bfloat16
  batched product is 8x slower on a strided ``K`` transposed; a decode step reads the
  whole capacity, unfilled columns masked, because the product copies a strided
  ``[:length]`` slice first;
* the prompt head every row shares (the system turn) is stored once and attended by one
  product over all rows' queries, not copied into every row;
* linear weights are packed once for oneDNN on CPU (`_Linear`); q, k and v are one
  product, and so are the MLP's gate and up projections (the original Linear weights
  become views of the fused ones);
* no attention-mask tensors are rebuilt per step: a per-row additive key bias (0 for a
  real token, -inf for padding and unfilled columns) is kept beside the cache.

Numerics follow the transformers implementation where it matters (RMSNorm and softmax
accumulate in float32, the rotary embedding comes from the model's own module), so
outputs agree with the transformers forward to float rounding (tests/test_engine.py
compares them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: model_type values whose decoder layers this module knows (see `unsupported_reason`)
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")

#: Upper bound on one prefill chunk's attention scores (bytes, float32); longer prompt
#: tails are prefilled in several chunks so memory stays bounded.
PREFILL_SCORE_BYTES = 256 * 1024 * 1024


def unsupported_reason(model: Any) -> str | None:
    """Why `model` cannot run through `FastDecoder` (None: it can)."""
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} is not silu"
    layer_types = getattr(config, "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types):
        return "sliding-window attention layers"
    if model_type == "mistral" and getattr(config, "sliding_window", None) is not None:
        return "sliding-window attention"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        return "not a (model.layers, lm_head) decoder"
    if getattr(inner, "embed_scale", None) is not None:
        return "scaled embeddings"
    for layer in inner.layers:
        attention, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        names = ("q_proj", "k_proj", "v_proj", "o_proj")
        if attention is None or not all(hasattr(attention, n) for n in names):
            return "attention without q/k/v/o projections"
        if mlp is None or not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
            return "MLP without gate/up/down projections"
        if any(getattr(mlp, n).bias is not None for n in ("gate_proj", "up_proj", "down_proj")):
            return "MLP biases"
    return None


def _rms_norm(x, weight, eps: float):
    """transformers' LlamaRMSNorm (float32 inside, then back to x's dtype)."""
    import torch

    if x.dtype == torch.float32:
        # torch's rms_norm: the same numbers in float32, in fewer kernels
        return torch.nn.functional.rms_norm(x, weight.shape, weight, eps)
    # in bfloat16 torch's rms_norm is 7-9x slower than these ops at 1024+ rows (prefill)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


class _Linear:
    """``x @ weight.T + bias`` (2-D x), through a weight prepacked for oneDNN on CPU.

    torch's ``F.linear`` on CPU re-lays the weight out for the matrix kernel at every call;
    a weight packed once (``mkldnn._reorder_linear_weight``, what torch.compile's CPU
    freezing and IPEX do) skips that: at batch 32 on 2 cores, 1.5-2x faster in bfloat16
    and 2-4x in float32 (BENCHMARKS.md).  A row's result does not depend on the other
    rows of the product (checked bit for bit at 1 to 3360 rows).  The packed copy costs
    a second copy of the weights in memory; off (``F.linear``) on CUDA and where oneDNN
    lacks the dtype.
    """

    def __init__(self, weight: Any, bias: Any, pack: bool, hint: int) -> None:
        import torch

        self.weight, self.bias = weight, bias
        self.packed = None
        if pack:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), hint)

    def __call__(self, x: Any):
        import torch
        import torch.nn.functional as F

        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def add(self, x: Any, residual: Any):
        """``residual + x @ weight.T + bias``, the residual add inside the product."""
        import torch

        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(
                x, residual, self.packed, self.bias, "add"
            )
        out = torch.addmm(residual, x, self.weight.t())
        return out if self.bias is None else out + self.bias


def can_pack(dtype: Any, device: Any) -> bool:
    """Whether `_Linear` packs weights of `dtype` on `device` (see `_Linear`)."""
    import torch

    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


@dataclass
class _Layer:
    norm1: Any
    eps1: float
    qkv: _Linear  # q, k and v fused: one product
    q_norm: Any  # qwen3: RMSNorm over each head's dimension (module), else None
    k_norm: Any
    o: _Linear
    norm2: Any
    eps2: float
    gate_up: _Linear  # gate and up fused: one product
    down: _Linear


@dataclass
class KVCache:
    """Keys and values of a batch: a shared head and preallocated per-row columns.

    ``head_keys`` / ``head_values``: (layers, kv_heads, head_dim, S) and (layers, kv_heads,
    S, head_dim), the prompt head every row shares (None when there is none): stored
    once, not per row, and attended by products over all rows at once.

    ``keys``: (layers, rows * kv_heads, head_dim, capacity), transposed (see the module
    docstring); ``values``: (layers, rows * kv_heads, capacity, head_dim); ``bias``:
    (rows, capacity) float32 additive key bias, 0 for a real token and -inf for padding
    and for the columns not filled yet.  Columns ``[0, length)`` are filled; every row
    shares the column index (the tails are left-padded), so one step writes one column.
    """

    keys: Any
    values: Any
    bias: Any
    length: int
    rows: int
    kv_heads: int
    head_keys: Any = None
    head_values: Any = None

    @property
    def capacity(self) -> int:
        return int(self.keys.shape[-1])

    @property
    def head_length(self) -> int:
        return 0 if self.head_keys is None else int(self.head_keys.shape[-1])


class FastDecoder:
    """The forward pass of a supported transformers model (see `unsupported_reason`)."""

    def __init__(self, model: Any, pack: bool = True, pack_hint: int = 32) -> None:
        import torch

        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"FastDecoder does not run this model: {reason}")
        config = model.config
        self.model = model
        self.inner = model.model
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.group = self.heads // self.kv_heads
        self.head_dim = int(
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.layers: list[_Layer] = []
        dtype = self.inner.norm.weight.dtype
        self.packed = pack and can_pack(dtype, self.inner.norm.weight.device)
        with torch.no_grad():
            for layer in self.inner.layers:
                attention, mlp = layer.self_attn, layer.mlp
                projections = [attention.q_proj, attention.k_proj, attention.v_proj]
                qkv_bias = None
                if any(m.bias is not None for m in projections):
                    qkv_bias = _fuse(projections, "bias")
                qkv = _fuse(projections, "weight")
                self.layers.append(
                    _Layer(
                        norm1=layer.input_layernorm.weight,
                        eps1=float(_eps(layer.input_layernorm)),
                        qkv=self._linear(qkv, qkv_bias, pack_hint),
                        q_norm=getattr(attention, "q_norm", None),
                        k_norm=getattr(attention, "k_norm", None),
                        o=self._linear(attention.o_proj.weight, attention.o_proj.bias, pack_hint),
                        norm2=layer.post_attention_layernorm.weight,
                        eps2=float(_eps(layer.post_attention_layernorm)),
                        gate_up=self._linear(
                            _fuse([mlp.gate_proj, mlp.up_proj], "weight"), None, pack_hint
                        ),
                        down=self._linear(mlp.down_proj.weight, None, pack_hint),
                    )
                )
            head = model.lm_head
            self.lm_head = self._linear(head.weight, getattr(head, "bias", None), pack_hint)
        self.scaling = float(
            getattr(self.inner.layers[0].self_attn, "scaling", self.head_dim**-0.5)
        )
        self.final_norm = self.inner.norm.weight
        self.final_eps = float(_eps(self.inner.norm))
        self.dtype = self.final_norm.dtype
        self.device = self.final_norm.device

    def _linear(self, weight: Any, bias: Any, hint: int) -> _Linear:
        return _Linear(weight, bias, self.packed, hint)

    # ------------------------------------------------------------------ the cache

    def new_cache(self, rows: int, capacity: int) -> KVCache:
        import torch

        n, group = len(self.layers), rows * self.kv_heads
        shape_k = (n, group, self.head_dim, capacity)
        shape_v = (n, group, capacity, self.head_dim)
        return KVCache(
            # zeros, not empty: a decode step reads the unfilled columns too (masked out by
            # the bias, but 0 * NaN garbage would still be NaN)
            keys=torch.zeros(shape_k, dtype=self.dtype, device=self.device),
            values=torch.zeros(shape_v, dtype=self.dtype, device=self.device),
            bias=torch.full((rows, capacity), float("-inf"), device=self.device),
            length=0,
            rows=rows,
            kv_heads=self.kv_heads,
        )

    def prefill_head(self, cache: KVCache, head_ids: Any) -> None:
        """Compute the prompt head every row shares (1 x S ids) once, into `cache`."""
        import torch

        length = int(head_ids.shape[1])
        head = self.new_cache(1, length)
        positions = torch.arange(length, device=self.device)[None]
        chunk = self.prefill_chunk(1, length)
        for a in range(0, length, chunk):
            self.forward(head_ids[:, a : a + chunk], positions[:, a : a + chunk], head)
        # one row's (layers, kv_heads, ...) is exactly the head's layout
        cache.head_keys, cache.head_values = head.keys, head.values

    def row_range(self, cache: KVCache, first: int, stop: int | None = None) -> KVCache:
        """Rows [first, stop) of `cache` as a cache of their own, sharing its memory."""
        stop = cache.rows if stop is None else stop
        h = cache.kv_heads
        return KVCache(
            cache.keys[:, first * h : stop * h],
            cache.values[:, first * h : stop * h],
            cache.bias[first:stop],
            cache.length,
            stop - first,
            h,
            cache.head_keys,
            cache.head_values,
        )

    def resized(
        self, cache: KVCache, index: Any | None = None, capacity: int | None = None
    ) -> KVCache:
        """A new cache with the rows `index` (all when None) and room for `capacity`
        columns; only the filled columns are copied (the shared head is kept as is)."""
        rows = cache.rows if index is None else int(index.numel())
        out = self.new_cache(rows, capacity or cache.capacity)
        out.head_keys, out.head_values = cache.head_keys, cache.head_values
        n, h, filled = len(self.layers), cache.kv_heads, cache.length
        keys = cache.keys.view(n, cache.rows, h, self.head_dim, cache.capacity)
        values = cache.values.view(n, cache.rows, h, cache.capacity, self.head_dim)
        bias = cache.bias
        if index is not None:
            keys, values, bias = keys[:, index], values[:, index], bias[index]
        out.keys.view(n, rows, h, self.head_dim, out.capacity)[..., :filled] = keys[..., :filled]
        out.values.view(n, rows, h, out.capacity, self.head_dim)[..., :filled, :] = values[
            ..., :filled, :
        ]
        out.bias[:, :filled] = bias[:, :filled]
        out.length = filled
        return out

    # ------------------------------------------------------------------ forward

    def prefill_chunk(self, rows: int, total: int) -> int:
        """Tokens per prefill chunk so that one layer's scores stay under the bound."""
        per_token = max(1, rows * self.heads * total * 4)
        return max(1, PREFILL_SCORE_BYTES // per_token)

    def forward(self, input_ids: Any, positions: Any, cache: KVCache, valid: Any | None = None):
        """Run `input_ids` (rows x T) at `positions` (rows x T) after the cache's shared
        head and filled columns, writing their keys and values into the cache; `valid`
        (rows x T, bool) marks real tokens (None: all).  Returns the logits of the last
        position (rows x vocab, in the model's dtype).  The caller makes sure the cache
        has room."""
        import torch
        import torch.nn.functional as F

        rows, width = input_ids.shape
        start, end = cache.length, cache.length + width
        if end > cache.capacity:
            raise ValueError(f"KV cache full: {end} > {cache.capacity} columns")
        if valid is not None:
            cache.bias[:, start:end] = torch.where(valid, 0.0, float("-inf"))
        else:
            cache.bias[:, start:end] = 0.0
        cache.length = end

        # activations stay 2-D (rows * T, hidden): the residual adds then fold into the
        # matrix products (`_Linear.add`), two kernels fewer per layer
        x = self.inner.embed_tokens(input_ids).view(rows * width, -1)
        cos, sin = self.inner.rotary_emb(x, position_ids=positions)
        half = self.head_dim // 2
        cos = cos.reshape(rows * width, 1, self.head_dim)
        # rotate_half(x) * sin == flip(x's two halves) * (-sin_1, sin_2): one sign flip
        # per forward here instead of a negation and a concatenation per layer
        sin = sin.reshape(rows * width, 1, self.head_dim)
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        bias = self._attention_bias(cache, start, end, x.dtype)
        heads, kvh, dim = self.heads, self.kv_heads, self.head_dim
        qd, kd = heads * dim, kvh * dim
        capacity, n = cache.capacity, rows * width
        for index, layer in enumerate(self.layers):
            h = _rms_norm(x, layer.norm1, layer.eps1)
            qkv = layer.qkv(h)
            v = qkv[:, qd + kd :]
            if layer.q_norm is None:
                # q and k side by side: one rotary pass for both
                qk = _rope(qkv[:, : qd + kd].view(n, heads + kvh, dim), cos, sin, half)
                q, k = qk[:, :heads], qk[:, heads:]
            else:  # qwen3: RMSNorm over each head before the rotary embedding
                q = _rope(layer.q_norm(qkv[:, :qd].view(n, heads, dim)), cos, sin, half)
                k = _rope(layer.k_norm(qkv[:, qd : qd + kd].view(n, kvh, dim)), cos, sin, half)
            keys = cache.keys[index]  # (rows * kvh, dim, capacity)
            values = cache.values[index]  # (rows * kvh, capacity, dim)
            keys.view(rows, kvh, dim, capacity)[..., start:end] = k.reshape(
                rows, width, kvh, dim
            ).permute(0, 2, 3, 1)
            values.view(rows, kvh, capacity, dim)[:, :, start:end] = v.reshape(
                rows, width, kvh, dim
            ).transpose(1, 2)
            out = self._attention(q, cache, index, bias, rows, width, end)
            x = layer.o.add(out, x)
            h = _rms_norm(x, layer.norm2, layer.eps2)
            gate_up = layer.gate_up(h)
            inner = gate_up.shape[-1] // 2
            gate = F.silu(gate_up[:, :inner], inplace=True)  # gate_up is ours to overwrite
            x = layer.down.add(gate * gate_up[:, inner:], x)
        last = x.view(rows, width, -1)[:, -1]
        return self.lm_head(_rms_norm(last.contiguous(), self.final_norm, self.final_eps))

    def _attention(
        self, q: Any, cache: KVCache, index: int, bias: Any, rows: int, width: int, end: int
    ):
        """Attention of the new tokens' queries (rows * T, heads, dim) over the shared head
        and each row's columns; returns (rows * T, heads * dim).

        The group's query heads are rows of one product (heads of a group are consecutive:
        transformers' repeat_kv order), so a step's product per row and kv head is
        (group x dim) @ (dim x columns).  The shared head's keys are the same for every
        row, so its scores are one product over all rows' queries at once, (rows * group)
        x dim @ dim x S per kv head, instead of a copy of the head per row; one softmax
        then runs over [head | row columns].
        """
        import torch

        heads, kvh, group, dim = self.heads, self.kv_heads, self.group, self.head_dim
        keys, values = cache.keys[index], cache.values[index]
        head = cache.head_length
        m = group * width  # query rows per (row, kv head)
        # the softmax scale is applied in the copy into the products' layout
        qg = q.new_empty((rows, kvh, group, width, dim))
        torch.mul(q.view(rows, width, kvh, group, dim).permute(0, 2, 3, 1, 4), self.scaling, out=qg)
        if width == 1:
            # A decode step attends over the cache's whole capacity, the unfilled columns
            # masked by the bias: a slice [:end] of the preallocated cache is strided, and
            # the batched product copies a strided operand first (the layer's whole cache,
            # every step); the bias is added by the product itself.
            scores = torch.baddbmm(bias, qg.view(rows * kvh, m, dim), keys)
            row_values, columns = values, cache.capacity
        else:
            scores = torch.bmm(qg.view(rows * kvh, m, dim), keys[:, :, :end])
            scores = scores.view(rows, heads, width, end).add_(bias)  # in place, exact
            row_values, columns = values[:, :end], end
        if not head:
            # softmax accumulates in float32 for bfloat16 inputs (as transformers' eager
            # attention, which upcasts) and writes the input's dtype
            probs = torch.softmax(scores.view(rows * kvh, m, columns), dim=-1)
            out = torch.bmm(probs, row_values).view(rows, kvh, group, width, dim)
        else:
            q_all = qg.transpose(0, 1).reshape(kvh, rows * m, dim)
            head_scores = torch.bmm(q_all, cache.head_keys[index])  # (kvh, rows * m, S)
            joined = torch.cat(
                (
                    head_scores.view(kvh, rows, m, head).transpose(0, 1),
                    scores.view(rows, kvh, m, columns),
                ),
                dim=-1,
            )
            probs = torch.softmax(joined, dim=-1)  # (rows, kvh, m, S + columns)
            p_head = probs[..., :head].transpose(0, 1).reshape(kvh, rows * m, head)
            out_head = torch.bmm(p_head, cache.head_values[index])  # (kvh, rows * m, dim)
            p_rows = probs[..., head:].reshape(rows * kvh, m, columns)
            out = torch.bmm(p_rows, row_values).view(rows, kvh, m, dim)
            out = out.add_(out_head.view(kvh, rows, m, dim).transpose(0, 1))
            out = out.view(rows, kvh, group, width, dim)
        # (rows, kvh, group, T, dim) -> (rows * T, heads * dim)
        return out.permute(0, 3, 1, 2, 4).reshape(rows * width, heads * dim)

    def _attention_bias(self, cache: KVCache, start: int, end: int, dtype: Any):
        """The additive attention bias of the row columns, in the model's dtype (0 or
        -inf: exact in any dtype); the shared head needs none.

        A decode step: (rows * kv_heads, 1, capacity) for `baddbmm`, -inf past the filled
        columns (its own token is real, nothing lies in the future).  A prefill chunk:
        (rows, 1, T, end), also causal within the new tokens; every query may see its own
        key, so a padding query (whose keys may all be padding) gets a finite softmax
        instead of NaN."""
        import torch

        width = end - start
        if width == 1:
            return cache.bias[:, None, :].to(dtype).repeat_interleave(cache.kv_heads, dim=0)
        bias = cache.bias[:, None, None, :end].to(dtype).expand(cache.rows, 1, width, end)
        bias = bias.clone()
        device = bias.device
        query = torch.arange(start, end, device=device)[:, None]
        key = torch.arange(end, device=device)[None, :]
        bias.masked_fill_((key > query)[None, None], float("-inf"))
        diagonal = torch.arange(width, device=device)
        bias[:, 0, diagonal, start + diagonal] = 0.0
        return bias


def _rope(x, cos, sin_signed, half: int):
    """transformers' rotary embedding, x * cos + rotate_half(x) * sin, with the sign of
    rotate_half folded into `sin_signed`; x: (tokens, heads, dim)."""
    import torch

    flipped = torch.cat((x[..., half:], x[..., :half]), dim=-1)
    return torch.addcmul(x * cos, flipped, sin_signed)


def _eps(norm: Any) -> float:
    return getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)


def _fuse(modules: list[Any], attribute: str):
    """One tensor holding `attribute` of every module, stacked on the output dimension;
    each module's parameter becomes a view of it, so memory is not doubled and the
    transformers forward keeps working on the same numbers."""
    import torch

    parts = [
        getattr(m, attribute)
        if getattr(m, attribute) is not None
        else torch.zeros(m.out_features, dtype=m.weight.dtype, device=m.weight.device)
        for m in modules
    ]
    fused = torch.cat([p.detach() for p in parts], dim=0)
    offset = 0
    for module, part in zip(modules, parts, strict=True):
        size = part.shape[0]
        setattr(
            module,
            attribute,
            torch.nn.Parameter(fused[offset : offset + size], requires_grad=False),
        )
        offset += size
    return fused
