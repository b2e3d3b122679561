<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- MAJA cloud mask (MASKS/*_CLM_R1.tif, SENTINEL2_MUSCATE bit order; reference/processors.md §2.4): bit 0 any
     cloud or shadow (summary), 1 all clouds, 2 clouds by reflectance threshold, 3 clouds by multi-temporal test,
     4 cloud extension, 5 cloud shadows, 6 shadows of clouds outside the image, 7 cirrus. A pixel is coloured by
     its highest bit set (discrete classes ending at 2^n - 1); clear pixels (0) are transparent. -->
<qgis version="3.22.0" styleCategories="Symbology">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1" nodataColor="" classificationMin="0" classificationMax="255">
      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <rastershader>
        <colorrampshader colorRampType="DISCRETE" classificationMode="1" clip="0" minimumValue="0" maximumValue="255" labelPrecision="0">
          <item value="0" color="#000000" alpha="0" label="0 clear"/>
          <item value="1" color="#d0d0d0" alpha="200" label="1 cloud or shadow (summary bit only)"/>
          <item value="3" color="#ffffff" alpha="230" label="2-3 clouds"/>
          <item value="7" color="#f4f4f4" alpha="230" label="4-7 clouds (reflectance threshold)"/>
          <item value="15" color="#e6e6e6" alpha="230" label="8-15 clouds (multi-temporal test)"/>
          <item value="31" color="#ffc8c8" alpha="200" label="16-31 cloud extension"/>
          <item value="63" color="#404040" alpha="200" label="32-63 cloud shadows"/>
          <item value="127" color="#808080" alpha="200" label="64-127 shadows of clouds outside the image"/>
          <item value="255" color="#64c8ff" alpha="200" label="128-255 cirrus"/>
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
    <brightnesscontrast gamma="1" brightness="0" contrast="0"/>
    <huesaturation saturation="0" grayscaleMode="0" invertColors="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
