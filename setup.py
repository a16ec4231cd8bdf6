from pathlib import Path

from setuptools import find_packages, setup

EXTRAS = {
    "mpi": ["mpi4py", "mpich"],
    "gpu": ["triton"],
    "test": ["pytest", "hypothesis", "triton", "scikit-learn", "ruff", "mypy"],
    "bench": ["scikit-learn", "scikit-image", "imagecodecs", "matplotlib", "spflow"],
    "docs": ["mkdocs-material", "mkdocstrings[python]"],
    "inpaint": ["diffusers", "safetensors"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="probmod",
    version="0.1.0",
    description="Probabilistic modeling: tensorized probabilistic circuits, "
    "probabilistic sparse coding and Distribution Transformers.",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["probmod*", "probcirc*", "sparsecoding*", "amortized*"]),
    # the small MNIST DDPM that probcirc.inpaint ships: safetensors weights and JSON configs
    package_data={"probcirc.inpaint": ["mnist_ddpm/*.json", "mnist_ddpm/*.safetensors"]},
    install_requires=[
        # torch is pinned only through constraints.txt, never here.
        "torch",
        "numpy",
        "scipy",
        "numba",
        "h5py",
        "constriction",
        "tqdm",
        "threadpoolctl",
        "pillow",
        "matplotlib",
    ],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "probcirc=probcirc.cli:main",
            "sparsecoding=sparsecoding.cli:main",
            "amortized=amortized.cli:main",
        ]
    },
)
