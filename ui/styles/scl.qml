<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- Sen2Cor scene classification (SCL): the standard palette (values and class names of MTD_MSIL2A.xml, colours
     of the L2A product specification as SNAP shows them; reference/processors.md §6). No data is transparent;
     nearest-neighbour resampling keeps classes crisp. -->
<qgis version="3.22.0" styleCategories="Symbology">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <colorPalette>
        <paletteEntry value="0" color="#000000" alpha="0" label="0 No data"/>
        <paletteEntry value="1" color="#ff0000" alpha="255" label="1 Saturated or defective"/>
        <paletteEntry value="2" color="#2e2e2e" alpha="255" label="2 Dark area pixels / topographic shadows"/>
        <paletteEntry value="3" color="#643200" alpha="255" label="3 Cloud shadows"/>
        <paletteEntry value="4" color="#008000" alpha="255" label="4 Vegetation"/>
        <paletteEntry value="5" color="#ffe65a" alpha="255" label="5 Not vegetated"/>
        <paletteEntry value="6" color="#0000ff" alpha="255" label="6 Water"/>
        <paletteEntry value="7" color="#818181" alpha="255" label="7 Unclassified"/>
        <paletteEntry value="8" color="#c1c1c1" alpha="255" label="8 Cloud medium probability"/>
        <paletteEntry value="9" color="#ffffff" alpha="255" label="9 Cloud high probability"/>
        <paletteEntry value="10" color="#64c8ff" alpha="255" label="10 Thin cirrus"/>
        <paletteEntry value="11" color="#ff96ff" alpha="255" label="11 Snow or ice"/>
      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast gamma="1" brightness="0" contrast="0"/>
    <huesaturation saturation="0" grayscaleMode="0" invertColors="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
