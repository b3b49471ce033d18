"""recbole-kgin: KGIN as a RecBole model plugin.

Install torch first on CPU-only machines (``pip install torch==2.13.0``), otherwise
pip pulls a multi-GB CUDA build.
"""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

# The documentation (docs/, built with warnings as errors by tests/test_docs.py). The
# newest releases need Python 3.11; older Pythons get the last ones that support them.
DOCS = [
    'sphinx==9.0.4; python_version >= "3.11"',
    'myst-parser==5.2.0; python_version >= "3.11"',
    'sphinx-argparse==0.6.1; python_version >= "3.11"',
    'sphinx==7.4.7; python_version < "3.11"',
    'myst-parser==3.0.1; python_version < "3.11"',
    'sphinx-argparse==0.4.0; python_version < "3.11"',
]

setup(
    name="recbole-kgin",
    version="0.1.0",
    description="KGIN (Knowledge Graph-based Intent Network, WWW 2021) as a RecBole model plugin",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["recbole_kgin", "recbole_kgin.*"])
    + ["recbole_kgin.properties", "recbole_kgin.tuning"],
    # properties/ and tuning/ live at the top of the repository; wheels carry them
    # inside the package (recbole_kgin/common/resources.py finds them either way).
    package_dir={"recbole_kgin.properties": "properties", "recbole_kgin.tuning": "tuning"},
    package_data={
        "recbole_kgin.properties": ["*.yaml", "model/*.yaml", "model/*/*.yaml", "dataset/*.yaml"],
        "recbole_kgin.tuning": ["*.yaml"],
        "recbole_kgin.model": ["kernels.cpp"],  # compiled on first use (recbole_kgin/model/kernel_build.py)
    },
    entry_points={"console_scripts": ["recbole-kgin = recbole_kgin.cli:run"]},
    install_requires=[
        "recbole==1.2.1",
        "torch>=2.5",  # fused Adam on CPU; torch.serialization.safe_globals (recbole_kgin/runtime/checkpoints.py)
        # recbole 1.2.1 pins ray<=2.6.3; Ray 2.6.3 is built against numpy 1.x ...
        "ray[tune]>=2.6,<=2.6.3",
        "numpy>=1.21,<2",
        # ... imports pkg_resources (gone in setuptools 81) ...
        "setuptools<81",
        # ... and Tune needs a pyarrow built for numpy 1.x.
        "pyarrow<15",
        # RecBole fills NaNs with chained inplace fillna, a no-op under pandas 3.
        "pandas>=1.3,<3",
        "scipy>=1.6",
        "pyyaml>=5.1",
        "matplotlib>=3.5",
        # torch.utils.cpp_extension builds the fused CPU kernels with it (and a C++ compiler)
        "ninja",
        # claims on the units of a comparison (recbole_kgin/experiments/claims.py)
        "filelock>=3.12",
    ],
    extras_require={
        # mutmut: mutation testing of recbole_kgin/model (docs/testing.md); hypothesis: random
        # and mutated atomic files (tests/data/test_fuzz_files.py); the docs packages for tests/test_docs.py.
        "test": ["pytest>=7", "mutmut==3.8.1", "hypothesis>=6", *DOCS],
        "docs": DOCS,
        # RecBole's built-in KGIN (model RecBoleKGIN) imports torch_scatter;
        # it compiles from source where no wheel exists (pip install --no-build-isolation).
        "scatter": ["torch-scatter"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
