from setuptools import find_packages, setup

package_name = "world_env_common"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml", "README.md"]),
    ],
    install_requires=["setuptools"],
    # colcon runs a package's tests with pytest only when it is declared here.
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="world-env developers",
    maintainer_email="dev@world-env.invalid",
    description=("Robot model (Pinocchio Panda), camera model, action-map renderer and ROS message"
                 " conversions shared by the world-env nodes and the offline training package."),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [],
    },
)
