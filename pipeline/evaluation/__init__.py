"""Evaluation: FID/KID on the FID Inception-v3, CLIP score, inpainting metrics."""

from pipeline.evaluation.clip_score import ClipScore
from pipeline.evaluation.fid_kid import (
    FidKid,
    FixedSubsetKID,
    SampleCountError,
    add_reference,
    fid_metric,
    kid_metric,
    sample_counts,
)
from pipeline.evaluation.inception_net import FIDInceptionV3
from pipeline.evaluation.inception_weights import InceptionWeightsError, load_fid_inception
from pipeline.evaluation.inpainting import (
    band_error,
    boundary_band,
    compare_inpainting,
    evaluation_masks,
    generated_region_crops,
)
from pipeline.evaluation.reference_stats import (
    ReferenceFeatures,
    images_content_hash,
    reference_features,
    reference_features_of_images,
)

__all__ = [
    "ClipScore",
    "FIDInceptionV3",
    "FidKid",
    "FixedSubsetKID",
    "InceptionWeightsError",
    "ReferenceFeatures",
    "SampleCountError",
    "add_reference",
    "fid_metric",
    "images_content_hash",
    "kid_metric",
    "load_fid_inception",
    "reference_features",
    "reference_features_of_images",
    "sample_counts",
    "band_error",
    "boundary_band",
    "compare_inpainting",
    "evaluation_masks",
    "generated_region_crops",
]
