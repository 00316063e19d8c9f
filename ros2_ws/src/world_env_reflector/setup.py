from setuptools import find_packages, setup

package_name = "world_env_reflector"

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
    description=("Instant Reflector node: scores task progress in [0, 1] from camera frames and the"
                 " instruction and publishes reward and termination."),
    license="Apache-2.0",
    entry_points={
        "console_scripts": ["reflector_node = world_env_reflector.reflector_node:main"],
    },
)
